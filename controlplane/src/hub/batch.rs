//! Group commit: which queued changes may share one batch.

use std::collections::HashSet;

use super::{Key, Op, State};

/// What one batch touches. Ops go into the same batch (one transaction)
/// only while they touch disjoint names, hostnames and token ids, so that
/// validating each against the pre-batch state gives the same answers as
/// applying them one by one.
#[derive(Debug, Default)]
pub(super) struct Touched {
    names: HashSet<String>,
    hosts: HashSet<String>,
    tokens: HashSet<String>,
}

impl Touched {
    /// Records `op`'s keys; `false` (nothing recorded) if it overlaps.
    pub(super) fn admit<'a>(&mut self, st: &'a State, op: &'a Op) -> bool {
        let mut names: Vec<&'a str> = Vec::new();
        let mut hosts: Vec<&'a str> = Vec::new();
        let mut tokens: Vec<&'a str> = Vec::new();
        let old = |key: &'a Key, names: &mut Vec<&'a str>, hosts: &mut Vec<&'a str>| {
            if let Some(t) = st.find(key) {
                names.push(&t.name);
                hosts.extend(t.hostnames.iter().map(String::as_str));
            }
        };
        match op {
            Op::CreateTunnel(t) => {
                names.push(&t.name);
                hosts.extend(t.hostnames.iter().map(String::as_str));
            }
            Op::UpdateTunnel(k, t) => {
                names.push(&t.name);
                hosts.extend(t.hostnames.iter().map(String::as_str));
                old(k, &mut names, &mut hosts);
                if let Key::Id(id) = k {
                    names.push(id);
                }
            }
            Op::DeleteTunnel(k) => {
                old(k, &mut names, &mut hosts);
                match k {
                    Key::Id(id) => names.push(id),
                    Key::Name(n) => names.push(n),
                }
            }
            Op::CreateToken(t) => names.extend(t.tunnels.iter().map(String::as_str)),
            Op::RevokeToken(id) => tokens.push(id),
        }
        // A token scoped to a tunnel may share a batch with other tokens of
        // that tunnel, never with a change of the tunnel itself.
        let token_scope = matches!(op, Op::CreateToken(_));
        let clash = names.iter().any(|n| {
            if token_scope {
                self.names.contains(&format!("tunnel:{n}"))
            } else {
                self.names.contains(&format!("tunnel:{n}"))
                    || self.names.contains(&format!("scope:{n}"))
            }
        }) || hosts.iter().any(|h| self.hosts.contains(*h))
            || tokens.iter().any(|t| self.tokens.contains(*t));
        if clash {
            return false;
        }
        let prefix = if token_scope { "scope:" } else { "tunnel:" };
        self.names
            .extend(names.iter().map(|n| format!("{prefix}{n}")));
        self.hosts.extend(hosts.iter().map(|h| h.to_string()));
        self.tokens.extend(tokens.iter().map(|t| t.to_string()));
        true
    }
}
