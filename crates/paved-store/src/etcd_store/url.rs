//! The CLI's form of an etcd store, `etcd://host:port[,host:port...][/prefix]`.

/// Where an etcd store lives: the members' client URLs and the key prefix of this store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTarget {
    /// `http://host:port` for each member, in the order given.
    pub endpoints: Vec<String>,
    /// The prefix every key of the store lives under, `/paved` unless the URL names one.
    pub prefix: String,
}

/// What is wrong with an `etcd://` string. Each message shows the form expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdUrlError {
    #[error("{url:?} does not start with etcd://; {FORM}")]
    Scheme { url: String },
    #[error("{url:?} names no etcd member; {FORM}")]
    NoMembers { url: String },
    #[error("{url:?}: member {index} is empty (two commas in a row, or one at an end?); {FORM}")]
    EmptyMember { url: String, index: usize },
    #[error("{url:?}: member {member:?} has no host; {FORM}")]
    NoHost { url: String, member: String },
    #[error("{url:?}: member {member:?} has a bad port {port:?} (want a number from 1 to 65535); {FORM}")]
    BadPort {
        url: String,
        member: String,
        port: String,
    },
    #[error("{url:?}: member {member:?}: {reason}; {FORM}")]
    BadHost {
        url: String,
        member: String,
        reason: &'static str,
    },
    #[error("{url:?}: the prefix {prefix:?} {reason}; {FORM}")]
    BadPrefix {
        url: String,
        prefix: String,
        reason: &'static str,
    },
}

const FORM: &str = "write etcd://host:port[,host:port...][/prefix], for example etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/paved";

/// The prefix of a store whose URL names none.
pub const DEFAULT_PREFIX: &str = "/paved";

/// etcd's client port, used for a member named without one.
const DEFAULT_PORT: u16 = 2379;

impl EtcdTarget {
    /// Parses `etcd://h1:2379,h2:2379,h3:2379[/prefix]`. A member without a port gets 2379;
    /// IPv6 addresses go in brackets (`[::1]:2379`).
    pub fn parse(url: &str) -> Result<EtcdTarget, EtcdUrlError> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| EtcdUrlError::Scheme { url: url.into() })?;
        let (members, prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        if members.is_empty() {
            return Err(EtcdUrlError::NoMembers { url: url.into() });
        }
        let endpoints = members
            .split(',')
            .enumerate()
            .map(|(index, member)| endpoint(url, index, member))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdTarget {
            endpoints,
            prefix: parse_prefix(url, prefix)?,
        })
    }

    /// The URL again, for `Store::describe` and status pages.
    pub fn to_url(&self) -> String {
        let members: Vec<_> = self
            .endpoints
            .iter()
            .map(|e| e.strip_prefix("http://").unwrap_or(e))
            .collect();
        format!("etcd://{}{}", members.join(","), self.prefix)
    }
}

fn endpoint(url: &str, index: usize, member: &str) -> Result<String, EtcdUrlError> {
    if member.is_empty() {
        return Err(EtcdUrlError::EmptyMember {
            url: url.into(),
            index: index + 1,
        });
    }
    let bad_host = |reason| EtcdUrlError::BadHost {
        url: url.into(),
        member: member.into(),
        reason,
    };
    if member.contains('@') {
        return Err(bad_host("credentials in the URL are not supported"));
    }
    if member.contains(['?', '#', ' ']) {
        return Err(bad_host("hosts hold no '?', '#' or spaces"));
    }
    let (host, port) =
        split_host_port(member).ok_or_else(|| bad_host("an IPv6 address needs a closing ']'"))?;
    if host.is_empty() || host == "[]" {
        return Err(EtcdUrlError::NoHost {
            url: url.into(),
            member: member.into(),
        });
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| EtcdUrlError::BadPort {
                url: url.into(),
                member: member.into(),
                port: port.into(),
            })?,
    };
    Ok(format!("http://{host}:{port}"))
}

/// `host` and the text after its port colon, if any; `None` for an unclosed `[`.
fn split_host_port(member: &str) -> Option<(&str, Option<&str>)> {
    if member.starts_with('[') {
        let close = member.find(']')?;
        let (host, rest) = member.split_at(close + 1);
        return Some(match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => (host, Some(rest)),
        });
    }
    Some(match member.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (member, None),
    })
}

fn parse_prefix(url: &str, prefix: &str) -> Result<String, EtcdUrlError> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Ok(DEFAULT_PREFIX.into());
    }
    let bad = |reason| EtcdUrlError::BadPrefix {
        url: url.into(),
        prefix: prefix.into(),
        reason,
    };
    if prefix.contains("//") {
        return Err(bad("has an empty segment ('//')"));
    }
    if prefix.contains(['?', '#', ' ', ',']) || prefix.chars().any(char::is_control) {
        return Err(bad("may hold no '?', '#', ',', spaces or control characters"));
    }
    Ok(prefix.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, want: Result<(&[&str], &str), &str>) {
        let got = EtcdTarget::parse(url);
        match (got, want) {
            (Ok(target), Ok((endpoints, prefix))) => {
                assert_eq!(target.endpoints, endpoints, "{url}: endpoints");
                assert_eq!(target.prefix, prefix, "{url}: prefix");
                assert_eq!(
                    EtcdTarget::parse(&target.to_url()),
                    Ok(target),
                    "{url}: round trip"
                );
            }
            (Err(error), Err(fragment)) => {
                let message = error.to_string();
                assert!(
                    message.contains(fragment),
                    "{url}: {message:?} lacks {fragment:?}"
                );
                assert!(
                    message.contains("etcd://host:port"),
                    "{url}: {message:?} shows the form"
                );
            }
            (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn good_urls() {
        check(
            "etcd://127.0.0.1:2379",
            Ok((&["http://127.0.0.1:2379"], "/paved")),
        );
        check(
            "etcd://h1:2379,h2:2380,h3/prod/paved/",
            Ok((
                &["http://h1:2379", "http://h2:2380", "http://h3:2379"],
                "/prod/paved",
            )),
        );
        check("etcd://[::1]:2379/x", Ok((&["http://[::1]:2379"], "/x")));
        check("etcd://[::1]", Ok((&["http://[::1]:2379"], "/paved")));
        check("etcd://h/", Ok((&["http://h:2379"], "/paved")));
    }

    #[test]
    fn bad_urls() {
        check("http://h:2379", Err("does not start with etcd://"));
        check("etcd:/h:2379", Err("does not start with etcd://"));
        check("etcd://", Err("names no etcd member"));
        check("etcd:///paved", Err("names no etcd member"));
        check("etcd://h1:2379,,h3:2379", Err("member 2 is empty"));
        check("etcd://h1:2379,", Err("member 2 is empty"));
        check("etcd://:2379", Err("has no host"));
        check("etcd://h1:23x9", Err("bad port \"23x9\""));
        check("etcd://h1:0", Err("bad port \"0\""));
        check("etcd://h1:70000", Err("bad port \"70000\""));
        check("etcd://h1:", Err("bad port \"\""));
        check("etcd://[::1:2379", Err("closing ']'"));
        check("etcd://user:pw@h1:2379", Err("credentials"));
        check("etcd://h1:2379//x", Err("empty segment"));
        check("etcd://h1:2379/a b", Err("spaces"));
    }
}
