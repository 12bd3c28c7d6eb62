//! Who may use which route: the token, and the Host check that keeps a loopback server from
//! being read through DNS rebinding.
//!
//! - `/metrics` and `/healthz` are open to anyone who can connect.
//! - Reads (GET, HEAD) need the token when the server listens beyond loopback
//!   ([`Access::reads_need_token`]); it comes as `Authorization: Bearer TOKEN`, a `token=`
//!   query parameter (which also sets the `imgd_token` cookie, so a browser keeps it), or that
//!   cookie.
//! - Changes (POST) always need the token, and only in the `Authorization` header: a page from
//!   another site cannot set that header, so it cannot make a browser change anything, whatever
//!   cookies the browser holds. Without a configured token no change is accepted.
//! - On a loopback server every request must name a loopback host (`localhost`, `127.0.0.1`,
//!   `[::1]`): a page whose own name was rebound to 127.0.0.1 names its own host and is refused.

use std::fmt;
use std::net::IpAddr;

use hyper::header::{AUTHORIZATION, COOKIE, HOST};
use hyper::{HeaderMap, Method};
use subtle::ConstantTimeEq;

/// The cookie a browser keeps the token in.
pub const TOKEN_COOKIE: &str = "imgd_token";

/// What the server asks of a request.
#[derive(Clone, Default)]
pub struct Access {
    /// The token (`[http] token` or `IMGD_HTTP_TOKEN`); `None` refuses every change.
    pub token: Option<String>,
    /// Whether reads need the token too (the server listens beyond loopback).
    pub reads_need_token: bool,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("reads_need_token", &self.reads_need_token)
            .finish()
    }
}

/// How a request fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through; `set_cookie` when the token came in the query.
    Allowed {
        /// Whether the request carried the right token.
        authorized: bool,
        /// Whether to hand the browser the token cookie.
        set_cookie: bool,
    },
    /// 401: the token is missing or wrong.
    Unauthorized,
    /// 403, with the reason.
    Forbidden(&'static str),
}

impl Access {
    /// Judges a request for an application route (every route but `/metrics` and `/healthz`)
    /// on a server listening on `local`.
    pub fn judge(
        &self,
        method: &Method,
        query: &str,
        headers: &HeaderMap,
        local: IpAddr,
    ) -> Verdict {
        if local.is_loopback() && !names_loopback_host(headers) {
            return Verdict::Forbidden(
                "this server answers only requests addressed to localhost\n",
            );
        }
        let matches = |offered: &str| {
            self.token
                .as_deref()
                .is_some_and(|token| bool::from(token.as_bytes().ct_eq(offered.as_bytes())))
        };
        let from_header = bearer(headers).is_some_and(matches);
        if *method == Method::POST {
            return match (&self.token, from_header) {
                (None, _) => Verdict::Forbidden(
                    "changes need a token: set [http] token or IMGD_HTTP_TOKEN and send it as \
                     `Authorization: Bearer TOKEN`\n",
                ),
                (Some(_), true) => Verdict::Allowed {
                    authorized: true,
                    set_cookie: false,
                },
                (Some(_), false) => Verdict::Unauthorized,
            };
        }
        let from_query = query_token(query).is_some_and(|offered| matches(&offered));
        let authorized = from_header || from_query || cookie_token(headers).is_some_and(matches);
        if self.reads_need_token && !authorized {
            return Verdict::Unauthorized;
        }
        Verdict::Allowed {
            authorized,
            set_cookie: from_query,
        }
    }
}

/// The token from `Authorization: Bearer TOKEN`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `token=` query parameter, percent-decoded.
fn query_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then_some(value)
        })
}

/// Whether the Host header names a loopback host; a request without one (HTTP/1.0) passes.
fn names_loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// The `Set-Cookie` value that hands a browser the token.
pub(crate) fn token_cookie(token: &str) -> String {
    format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hyper::header::HeaderValue;

    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn access(token: Option<&str>, reads_need_token: bool) -> Access {
        Access {
            token: token.map(str::to_string),
            reads_need_token,
        }
    }

    const OPEN: Verdict = Verdict::Allowed {
        authorized: false,
        set_cookie: false,
    };

    #[test]
    fn loopback_reads_are_open_but_only_for_loopback_host_names() {
        let a = access(Some("s3cret"), false);
        for host in [
            "127.0.0.1:9187",
            "localhost:9187",
            "[::1]:9187",
            "LOCALHOST",
        ] {
            let h = headers(&[("host", host)]);
            assert_eq!(a.judge(&Method::GET, "", &h, LOOPBACK), OPEN, "{host}");
        }
        let rebound = headers(&[("host", "evil.example:9187")]);
        assert!(matches!(
            a.judge(&Method::GET, "", &rebound, LOOPBACK),
            Verdict::Forbidden(_)
        ));
        // Beyond loopback the host name is the client's business; the token guards instead.
        assert_eq!(
            a.judge(&Method::GET, "token=s3cret", &rebound, ANY),
            Verdict::Allowed {
                authorized: true,
                set_cookie: true
            }
        );
    }

    #[test]
    fn beyond_loopback_reads_need_the_token_by_header_query_or_cookie() {
        let a = access(Some("s3cret"), true);
        let host = ("host", "photos.lan:9187");
        assert_eq!(
            a.judge(&Method::GET, "", &headers(&[host]), ANY),
            Verdict::Unauthorized
        );
        let wrong = headers(&[host, ("authorization", "Bearer s3creT")]);
        assert_eq!(
            a.judge(&Method::GET, "", &wrong, ANY),
            Verdict::Unauthorized
        );
        let right = headers(&[host, ("authorization", "bearer s3cret")]);
        assert!(matches!(
            a.judge(&Method::GET, "", &right, ANY),
            Verdict::Allowed {
                authorized: true,
                set_cookie: false
            }
        ));
        let cookie = headers(&[host, ("cookie", "theme=dark; imgd_token=s3cret")]);
        assert!(matches!(
            a.judge(&Method::GET, "q=x", &cookie, ANY),
            Verdict::Allowed {
                authorized: true,
                ..
            }
        ));
        assert_eq!(
            a.judge(&Method::GET, "q=a&token=s3cret", &headers(&[host]), ANY),
            Verdict::Allowed {
                authorized: true,
                set_cookie: true
            }
        );
    }

    #[test]
    fn changes_need_the_token_in_the_header_even_on_loopback() {
        let a = access(Some("s3cret"), false);
        let host = ("host", "localhost:9187");
        assert_eq!(
            a.judge(&Method::POST, "", &headers(&[host]), LOOPBACK),
            Verdict::Unauthorized
        );
        // A cookie or the query is not enough for a change: another site's page could send them.
        let cookie = headers(&[host, ("cookie", "imgd_token=s3cret")]);
        assert_eq!(
            a.judge(&Method::POST, "token=s3cret", &cookie, LOOPBACK),
            Verdict::Unauthorized
        );
        let right = headers(&[host, ("authorization", "Bearer s3cret")]);
        assert!(matches!(
            a.judge(&Method::POST, "", &right, LOOPBACK),
            Verdict::Allowed {
                authorized: true,
                ..
            }
        ));
        let none = access(None, false);
        assert!(matches!(
            none.judge(&Method::POST, "", &right, LOOPBACK),
            Verdict::Forbidden(reason) if reason.contains("[http] token")
        ));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let shown = format!("{:?}", access(Some("s3cret"), true));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
