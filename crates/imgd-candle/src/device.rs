//! Choosing the device the models run on.
//!
//! CPU is the default and always works. CUDA needs this crate's `cuda` feature (off by default:
//! the default build needs no GPU and no CUDA toolkit) and a loadable driver. cudarc panics
//! when it cannot load `libcuda.so` instead of returning an error, so the probe runs inside
//! `catch_unwind` with the panic message kept out of the log, and every failure falls back to
//! the CPU with the reason.

use candle_core::Device;

/// The device picked and, when CUDA was asked for but not used, why.
#[derive(Debug, Clone)]
pub struct DeviceChoice {
    /// The device to load models on.
    pub device: Device,
    /// Why the CPU was used although CUDA was asked for; `None` when the choice is what was
    /// asked for.
    pub fallback: Option<String>,
}

/// Picks the device: CUDA device 0 when `cuda` is asked for and available, the CPU otherwise
/// (with the reason in [`DeviceChoice::fallback`]). Never panics.
pub fn select_device(cuda: bool) -> DeviceChoice {
    if !cuda {
        return DeviceChoice {
            device: Device::Cpu,
            fallback: None,
        };
    }
    match try_cuda() {
        Ok(device) => DeviceChoice {
            device,
            fallback: None,
        },
        Err(why) => DeviceChoice {
            device: Device::Cpu,
            fallback: Some(why),
        },
    }
}

/// The device to run on: [`select_device`], with a fallback to the CPU logged as a warning.
pub fn device(cuda: bool) -> Device {
    let choice = select_device(cuda);
    if let Some(why) = &choice.fallback {
        tracing::warn!("CUDA requested but unavailable, running on the CPU: {why}");
    }
    choice.device
}

/// The device every candle model of this process shares (CLIP, BLIP, TrOCR: one CUDA context,
/// not one per model): [`device`] on the first call, logged, and the same device after. A
/// process runs one configuration, so the first call's `cuda` decides.
pub fn shared_device(cuda: bool) -> Device {
    static SHARED: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let device = device(cuda);
            tracing::info!("candle models run on {}", device_name(&device));
            device
        })
        .clone()
}

/// The CPU threads candle's operations use: `RAYON_NUM_THREADS` when set, else candle's own
/// choice (the physical cores, or the preferred ones on hybrid CPUs).
///
/// candle asks for this on every matmul, and without `RAYON_NUM_THREADS` its answer comes from
/// parsing `/proc/cpuinfo` each time: a 1×384 by 384×384 matmul takes 2.7x as long on a
/// 2-core machine, and more where `/proc/cpuinfo` is longer (`cargo bench -p imgd-clip --bench
/// candle_threads`). The binary therefore sets the variable to this value once, at start.
pub fn candle_cpu_threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// A short name of the device for logs and metrics: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(not(feature = "cuda"))]
fn try_cuda() -> Result<Device, String> {
    Err("this build has no CUDA support (build imgd with the `cuda` feature)".to_string())
}

#[cfg(feature = "cuda")]
fn try_cuda() -> Result<Device, String> {
    use std::panic::{catch_unwind, set_hook, take_hook};

    // cudarc panics when the driver library cannot be loaded; keep that panic out of stderr.
    let hook = take_hook();
    set_hook(Box::new(|_| {}));
    let result = catch_unwind(|| Device::new_cuda(0));
    set_hook(hook);
    match result {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(format!("CUDA device 0 could not be opened: {e}")),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("the CUDA driver could not be loaded: {message}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available_and_cuda_falls_back_with_a_reason() {
        let cpu = select_device(false);
        assert!(cpu.device.is_cpu() && cpu.fallback.is_none());
        // Whatever the machine, asking for CUDA never panics; without a GPU it explains why.
        let choice = select_device(true);
        if choice.device.is_cpu() {
            assert!(choice.fallback.is_some());
        }
        assert_eq!(device_name(&Device::Cpu), "cpu");
        assert!(device(false).is_cpu());
    }
}
