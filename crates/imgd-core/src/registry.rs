//! The set of modules a build serves: what the binary registers, one line per module.

use crate::module::{Migration, Module};

/// A module name that is not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown module `{name}` (known: {known})")]
pub struct UnknownModule {
    /// The name asked for.
    pub name: String,
    /// The registered names, comma-separated.
    pub known: String,
}

/// A set of specs that cannot serve together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two modules share a name or a bit.
    #[error("modules `{0}` and `{1}` share a name or a bit")]
    Clash(&'static str, &'static str),
    /// A bit past the 63 that `images.modules_mask` holds.
    #[error("module `{0}` has bit {1}; bits run from 0 to 62")]
    BitOutOfRange(&'static str, u8),
    /// A gate names a module that is not registered.
    #[error("module `{0}` is gated by `{1}`, which is not registered")]
    UnknownGate(&'static str, &'static str),
    /// Two migrations share a version.
    #[error("migrations `{0}` and `{1}` share a version")]
    MigrationClash(&'static str, &'static str),
}

/// The modules a build serves, in bit order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    modules: Vec<Module>,
}

impl Registry {
    /// The registry of `modules`: names and bits unique, gates naming registered modules,
    /// migration versions unique.
    pub fn new(modules: &[Module]) -> Result<Self, RegistryError> {
        let mut modules = modules.to_vec();
        modules.sort();
        for pair in modules.windows(2) {
            if pair[0] == pair[1] {
                return Err(RegistryError::Clash(pair[0].name(), pair[1].name()));
            }
        }
        for (i, a) in modules.iter().enumerate() {
            if a.spec().bit > 62 {
                return Err(RegistryError::BitOutOfRange(a.name(), a.spec().bit));
            }
            if let Some(b) = modules[i + 1..].iter().find(|b| b.name() == a.name()) {
                return Err(RegistryError::Clash(a.name(), b.name()));
            }
            if let Some(gate) = &a.spec().gate
                && !modules.iter().any(|m| m.name() == gate.after)
            {
                return Err(RegistryError::UnknownGate(a.name(), gate.after));
            }
        }
        let registry = Registry { modules };
        let migrations = registry.migrations();
        for pair in migrations.windows(2) {
            if pair[0].version == pair[1].version {
                return Err(RegistryError::MigrationClash(pair[0].name, pair[1].name));
            }
        }
        Ok(registry)
    }

    /// Every registered module, in bit order.
    pub fn all(&self) -> &[Module] {
        &self.modules
    }

    /// The modules `imgd enqueue` queues when `--modules` is not given.
    pub fn defaults(&self) -> Vec<Module> {
        self.modules
            .iter()
            .copied()
            .filter(|m| m.spec().queued_by_default)
            .collect()
    }

    /// The module called `name` (case and surrounding spaces ignored).
    pub fn get(&self, name: &str) -> Result<Module, UnknownModule> {
        let wanted = name.trim().to_ascii_lowercase();
        self.modules
            .iter()
            .copied()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| UnknownModule {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }

    /// The registered names, in bit order.
    pub fn names(&self) -> Vec<&'static str> {
        self.modules.iter().map(|m| m.name()).collect()
    }

    /// A comma-separated module list such as `metadata,technical`, sorted and without
    /// repeats; `all` means every module.
    pub fn parse_list(&self, list: &str) -> Result<Vec<Module>, UnknownModule> {
        let mut modules = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.eq_ignore_ascii_case("all") {
                modules.extend(self.modules.iter().copied());
            } else {
                modules.push(self.get(part)?);
            }
        }
        modules.sort();
        modules.dedup();
        Ok(modules)
    }

    /// The registered modules whose bits are set in `mask`.
    pub fn from_mask(&self, mask: i64) -> impl Iterator<Item = Module> + '_ {
        self.modules
            .iter()
            .copied()
            .filter(move |m| mask & m.bit() != 0)
    }

    /// The module `module` waits for, with the column that opens its gate.
    pub fn gate_of(&self, module: Module) -> Option<(Module, &'static str)> {
        let gate = module.spec().gate.as_ref()?;
        let after = self
            .modules
            .iter()
            .copied()
            .find(|m| m.name() == gate.after)?;
        Some((after, gate.column))
    }

    /// Every registered module's migrations, in version order.
    pub fn migrations(&self) -> Vec<&'static Migration> {
        let mut all: Vec<&'static Migration> = self
            .modules
            .iter()
            .flat_map(|m| m.spec().migrations.iter())
            .collect();
        all.sort_by_key(|m| m.version);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResultRow;
    use crate::module::{Gate, ModuleSpec, ResultKey, RunsOn};

    const fn spec(name: &'static str, bit: u8, gate: Option<Gate>) -> ModuleSpec {
        ModuleSpec {
            name,
            bit,
            summary: "",
            tier: None,
            runs_on: RunsOn::DecodeThreads,
            queued_by_default: bit.is_multiple_of(2),
            result_table: "result_test",
            result_key: ResultKey::Image,
            migrations: &[],
            search_text: &[],
            gate,
            store_hook: None,
        }
    }

    fn skipped() -> ResultRow {
        unreachable!()
    }

    static ALPHA: ModuleSpec = spec("alpha", 0, None);
    static BETA: ModuleSpec = spec(
        "beta",
        3,
        Some(Gate {
            after: "alpha",
            column: "flag",
            skipped_row: skipped,
        }),
    );
    static GAMMA: ModuleSpec = spec("gamma", 1, None);
    static ALPHA_AGAIN: ModuleSpec = spec("alpha", 5, None);
    static SAME_BIT: ModuleSpec = spec("delta", 3, None);
    static TOO_HIGH: ModuleSpec = spec("omega", 63, None);

    fn of(specs: &[&'static ModuleSpec]) -> Result<Registry, RegistryError> {
        Registry::new(&specs.iter().map(|s| Module::of(s)).collect::<Vec<_>>())
    }

    #[test]
    fn names_parse_lists_dedup_and_masks_round_trip() {
        let registry = of(&[&BETA, &ALPHA, &GAMMA]).unwrap();
        assert_eq!(registry.names(), ["alpha", "gamma", "beta"]);
        let alpha = registry.get(" Alpha ").unwrap();
        assert_eq!((alpha.name(), alpha.bit()), ("alpha", 1));
        let list = registry.parse_list("beta, alpha,beta").unwrap();
        assert_eq!(list, [alpha, registry.get("beta").unwrap()]);
        assert_eq!(registry.parse_list("all").unwrap().len(), 3);
        let mask = Module::mask_of(&list);
        assert_eq!(registry.from_mask(mask).collect::<Vec<_>>(), list);
        assert_eq!(registry.defaults(), [alpha]);
        let err = registry.parse_list("alpha,colour").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown module `colour` (known: alpha, gamma, beta)"
        );
        let beta = registry.get("beta").unwrap();
        assert_eq!(registry.gate_of(beta), Some((alpha, "flag")));
        assert_eq!(registry.gate_of(alpha), None);
    }

    #[test]
    fn clashing_or_dangling_specs_are_refused() {
        assert!(matches!(
            of(&[&ALPHA, &ALPHA_AGAIN]),
            Err(RegistryError::Clash("alpha", "alpha"))
        ));
        assert!(matches!(
            of(&[&BETA, &SAME_BIT, &ALPHA]),
            Err(RegistryError::Clash(_, _))
        ));
        assert!(matches!(
            of(&[&BETA]),
            Err(RegistryError::UnknownGate("beta", "alpha"))
        ));
        assert!(matches!(
            of(&[&TOO_HIGH]),
            Err(RegistryError::BitOutOfRange("omega", 63))
        ));
    }
}
