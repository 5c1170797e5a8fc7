//! A tunnel as one core uses it: its configuration, its tokens (digests
//! only) and its upstream addresses. Shared by the static table (`route`)
//! and the control plane's (`managed`).

use std::net::IpAddr;

use crate::auth::TokenSet;
use crate::config::TunnelConfig;
use crate::target::Upstream;

/// A tunnel as one core uses it.
#[derive(Debug)]
pub struct Tunnel {
    /// The configuration it was built from.
    pub config: TunnelConfig,
    /// Accepted tokens, hashed.
    pub tokens: TokenSet,
    /// Where the upstream is.
    pub upstream: Upstream,
}

impl Tunnel {
    /// Whether `client` may use this tunnel.
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(client),
            v4 => v4,
        };
        self.config.allowed_cidrs.is_empty()
            || self
                .config
                .allowed_cidrs
                .iter()
                .any(|n| n.contains(&client))
    }
}
