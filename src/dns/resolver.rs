//! TXT lookups over the network with hickory-resolver, behind the blocking [`TxtLookup`] interface
//! the stages use.
//!
//! Answers are cached by hickory's own response cache, which keeps each answer (and each
//! NXDOMAIN, by the SOA minimum) no longer than its TTL, so a key record that changes is seen
//! again once its TTL has run out. hickory is asynchronous: one small runtime (one worker thread)
//! drives it, and `block_on` may be called from any number of scanning threads at once.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use super::{normalize_name, DnsError, TxtLookup};

/// How to reach DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers to ask; empty means the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts per name server.
    pub attempts: usize,
}

pub struct DnsTxt {
    runtime: tokio::runtime::Runtime,
    resolver: TokioResolver,
}

impl DnsTxt {
    pub fn new(settings: &ResolverSettings) -> Result<DnsTxt, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("spoolsift-dns")
            .enable_all()
            .build()
            .map_err(|e| format!("DNS runtime: {e}"))?;
        let mut builder = if settings.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| format!("system DNS configuration: {e}"))?
        } else {
            let servers = settings
                .nameservers
                .iter()
                .map(|addr| {
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    ns.connections.iter_mut().for_each(|c| c.port = addr.port());
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = settings.timeout;
        opts.attempts = settings.attempts.max(1);
        // The resolver's background tasks must live on our runtime.
        let resolver = {
            let _guard = runtime.enter();
            builder.build().map_err(|e| format!("DNS resolver: {e}"))?
        };
        Ok(DnsTxt { runtime, resolver })
    }
}

impl TxtLookup for DnsTxt {
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        // Fully qualified: no search domains appended.
        let fqdn = format!("{}.", normalize_name(name));
        match self.runtime.block_on(self.resolver.txt_lookup(fqdn.as_str())) {
            Ok(lookup) => {
                let records: Vec<Vec<u8>> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect()),
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    Err(DnsError::NoRecords)
                } else {
                    Ok(records)
                }
            }
            Err(e) if e.is_nx_domain() => Err(DnsError::NoSuchName),
            Err(e) if e.is_no_records_found() => Err(DnsError::NoRecords),
            Err(e) => Err(DnsError::Temporary(e.to_string())),
        }
    }
}
