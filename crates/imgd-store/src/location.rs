//! What `--db` / `IMGD_DB` names: a SQLite file as a path or a `sqlite://` URL, or a
//! PostgreSQL server as a `postgres://` URL. Any other URL is refused with its scheme named, and
//! a password in it is never repeated.

use std::path::PathBuf;

/// Why `--db` names no database this store opens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// A PostgreSQL URL.
    #[error(
        "{url} names a PostgreSQL server; this imgd serves SQLite databases only: pass a file \
         path or sqlite:///path/to/imgd.db"
    )]
    Postgres {
        /// The URL without its password.
        url: String,
    },
    /// A URL of any other scheme.
    #[error(
        "{url}: imgd opens no `{scheme}://` database; pass a file path or sqlite:///path/to/imgd.db"
    )]
    UnknownScheme {
        /// The URL without its password.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// `sqlite://` with no path after it.
    #[error("{0}: the URL names no file")]
    NoPath(String),
}

/// The database `--db` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server: the URL as given (`postgres://user@host:port/db`).
    Postgres(String),
}

impl Location {
    /// How the location is shown: the file, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => without_password(url),
        }
    }

    /// The SQLite file, when this is one.
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// What `db` names: a plain path as it is, `sqlite:///abs/path` or `sqlite://relative/path`
/// (or `sqlite:path`) without the scheme, or a `postgres://` (`postgresql://`) URL.
pub fn parse(db: &str) -> Result<Location, LocationError> {
    let Some((scheme, rest)) = db.split_once("://") else {
        return Ok(Location::Sqlite(match db.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => PathBuf::from(db),
        }));
    };
    let is_scheme = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        // `photos://x` with a `/` before the `://` is a path that happens to hold `://`.
        return Ok(Location::Sqlite(PathBuf::from(db)));
    }
    let url = without_password(db);
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" if rest.is_empty() => Err(LocationError::NoPath(url)),
        "sqlite" => Ok(Location::Sqlite(PathBuf::from(rest))),
        "postgres" | "postgresql" => Ok(Location::Postgres(db.to_string())),
        _ => Err(LocationError::UnknownScheme {
            url,
            scheme: scheme.to_string(),
        }),
    }
}

impl Location {
    /// A PostgreSQL location whose URL has no password, given `password` (as the binary reads
    /// it from `PGPASSWORD`); any other location as it is.
    pub fn with_password(self, password: &str) -> Location {
        let Location::Postgres(url) = &self else {
            return self;
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return self;
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let encoded: String = password
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        match authority.rsplit_once('@') {
            Some((user, host)) if !user.contains(':') => {
                Location::Postgres(format!("{scheme}://{user}:{encoded}@{host}{tail}"))
            }
            _ => self,
        }
    }
}

/// The SQLite file `db` names (see [`parse`]); a PostgreSQL URL is refused.
pub fn sqlite_path(db: &str) -> Result<PathBuf, LocationError> {
    match parse(db)? {
        Location::Sqlite(path) => Ok(path),
        Location::Postgres(url) => Err(LocationError::Postgres {
            url: without_password(&url),
        }),
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let tail = hide_password_parameter(tail);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => format!("{scheme}://{authority}{tail}"),
        },
        None => format!("{scheme}://{authority}{tail}"),
    }
}

/// A URL's path and query with the value of a `password=` parameter replaced by `***`.
fn hide_password_parameter(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_sqlite_urls_name_files() {
        for (given, path) in [
            ("/var/lib/imgd/imgd.db", "/var/lib/imgd/imgd.db"),
            ("imgd.db", "imgd.db"),
            ("sqlite:///var/lib/imgd/imgd.db", "/var/lib/imgd/imgd.db"),
            ("sqlite://relative/imgd.db", "relative/imgd.db"),
            ("SQLITE:///x.db", "/x.db"),
            ("sqlite:x.db", "x.db"),
            ("photos:2024.db", "photos:2024.db"),
            ("./odd/x://y.db", "./odd/x://y.db"),
        ] {
            assert_eq!(sqlite_path(given), Ok(PathBuf::from(path)), "{given}");
        }
    }

    /// Regression: `--db postgres://...` created a SQLite database in a folder named
    /// `postgres:`.
    #[test]
    fn other_urls_are_refused_naming_the_scheme_never_the_password() {
        let error = sqlite_path("postgres://imgd:s3cret@db.lan:5432/photos").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("PostgreSQL"), "{message}");
        assert!(message.contains("imgd:***@db.lan:5432/photos"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(matches!(
            sqlite_path("postgresql://db.lan/photos"),
            Err(LocationError::Postgres { .. })
        ));
        let error = sqlite_path("mysql://root:pw@h/x").unwrap_err();
        assert_eq!(
            error,
            LocationError::UnknownScheme {
                url: "mysql://root:***@h/x".into(),
                scheme: "mysql".into()
            }
        );
        assert!(matches!(
            sqlite_path("sqlite://"),
            Err(LocationError::NoPath(_))
        ));
    }

    #[test]
    fn postgres_urls_are_locations_of_their_own() {
        assert_eq!(
            parse("postgresql://imgd@db.lan:5432/photos"),
            Ok(Location::Postgres(
                "postgresql://imgd@db.lan:5432/photos".into()
            ))
        );
        assert_eq!(
            parse("/var/lib/imgd/imgd.db"),
            Ok(Location::Sqlite("/var/lib/imgd/imgd.db".into()))
        );
        assert_eq!(
            parse("postgres://imgd:pw@h/db").unwrap().display(),
            "postgres://imgd:***@h/db"
        );
    }

    #[test]
    fn a_password_from_the_environment_joins_a_url_without_one() {
        let given = parse("postgres://imgd@db.lan:5432/photos").unwrap();
        let Location::Postgres(url) = given.with_password("p@ss/w:rd") else {
            panic!("still PostgreSQL");
        };
        assert_eq!(url, "postgres://imgd:p%40ss%2Fw%3Ard@db.lan:5432/photos");
        let parsed: postgres::Config = url.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"p@ss/w:rd"[..]));
        // A URL's own password wins; files are left alone.
        assert_eq!(
            parse("postgres://imgd:mine@h/db")
                .unwrap()
                .with_password("other"),
            Location::Postgres("postgres://imgd:mine@h/db".into())
        );
        assert_eq!(
            parse("/x.db").unwrap().with_password("p"),
            Location::Sqlite("/x.db".into())
        );
    }

    #[test]
    fn a_password_is_hidden_wherever_it_sits() {
        assert_eq!(
            without_password("postgres://u:p@a@h/db?sslmode=require"),
            "postgres://u:***@h/db?sslmode=require"
        );
        assert_eq!(without_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            without_password("postgres://u@h/db?password=pw&sslmode=disable"),
            "postgres://u@h/db?password=***&sslmode=disable"
        );
        assert_eq!(
            without_password("postgres://h:5432/db"),
            "postgres://h:5432/db"
        );
    }
}
