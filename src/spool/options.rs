//! The `-option` lines of a `-H` file, kept in order and byte for byte.
//!
//! Exim ignores option lines it does not know (so a downgrade does not break), so we keep every
//! line we do not understand and write it back unchanged. The `--` taint marker and a `(quoter)`
//! are part of a line's meaning and are never dropped.

/// Which ACL variable family a block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AclScope {
    /// `-aclc`: `$acl_c…`, connection variables.
    Connection,
    /// `-aclm`: `$acl_m…`, message variables.
    Message,
    /// `-acl <n>`: the obsolete numbered form (read only by Exim; kept as found).
    Numbered,
}

/// An ACL variable block: `-aclm <rest-of-name> <len>\n<len bytes>\n`. The value is counted, not
/// line based, so it may hold LFs and lines that start with `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclVariable {
    pub tainted: bool,
    pub quoter: Option<Vec<u8>>,
    pub scope: AclScope,
    /// The name without `acl_` and the scope letter: `$acl_m_scanned` is `_scanned`.
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl AclVariable {
    /// A message variable such as the re-queue marker (`$acl_m_scanned` → `name = "_scanned"`).
    pub fn message(name: &[u8], value: &[u8]) -> AclVariable {
        AclVariable {
            tainted: false,
            quoter: None,
            scope: AclScope::Message,
            name: name.to_vec(),
            value: value.to_vec(),
        }
    }

    /// The variable's name as Exim's expansions spell it (`acl_m_scanned`).
    pub fn exim_name(&self) -> String {
        let n = String::from_utf8_lossy(&self.name);
        match self.scope {
            AclScope::Connection => format!("acl_c{n}"),
            AclScope::Message => format!("acl_m{n}"),
            AclScope::Numbered => format!("acl#{n}"),
        }
    }
}

/// A plain option line: `-` [`-`] [`(`quoter`)`] name [` ` value].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionLine {
    pub tainted: bool,
    pub quoter: Option<Vec<u8>>,
    pub name: Vec<u8>,
    /// Everything after the first space, kept exactly (extra spaces are part of the value).
    pub value: Option<Vec<u8>>,
}

impl OptionLine {
    pub fn flag(name: &str) -> OptionLine {
        OptionLine { tainted: false, quoter: None, name: name.as_bytes().to_vec(), value: None }
    }

    pub fn with_value(name: &str, value: &[u8]) -> OptionLine {
        OptionLine { tainted: false, quoter: None, name: name.as_bytes().to_vec(), value: Some(value.to_vec()) }
    }
}

/// One entry of the option section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolOption {
    Line(OptionLine),
    Acl(AclVariable),
}

impl SpoolOption {
    /// The name used for ordering and lookup (`aclc`/`aclm`/`acl` for ACL blocks).
    pub fn name(&self) -> &[u8] {
        match self {
            SpoolOption::Line(l) => &l.name,
            SpoolOption::Acl(a) => match a.scope {
                AclScope::Connection => b"aclc",
                AclScope::Message => b"aclm",
                AclScope::Numbered => b"acl",
            },
        }
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let (tainted, quoter) = match self {
            SpoolOption::Line(l) => (l.tainted, &l.quoter),
            SpoolOption::Acl(a) => (a.tainted, &a.quoter),
        };
        out.push(b'-');
        if tainted {
            out.push(b'-');
        }
        if let Some(q) = quoter {
            out.push(b'(');
            out.extend_from_slice(q);
            out.push(b')');
        }
        match self {
            SpoolOption::Line(l) => {
                out.extend_from_slice(&l.name);
                if let Some(v) = &l.value {
                    out.push(b' ');
                    out.extend_from_slice(v);
                }
                out.push(b'\n');
            }
            SpoolOption::Acl(a) => {
                out.extend_from_slice(self.name());
                out.push(b' ');
                out.extend_from_slice(&a.name);
                out.push(b' ');
                out.extend_from_slice(a.value.len().to_string().as_bytes());
                out.push(b'\n');
                out.extend_from_slice(&a.value);
                out.push(b'\n');
            }
        }
    }
}

/// The order in which Exim writes option lines (spool_out.c). New lines we add are placed by it,
/// so a file we write looks like one Exim wrote.
const EXIM_ORDER: &[&str] = &[
    "received_time_usec",
    "received_time_complete",
    "helo_name",
    "host_address",
    "host_name",
    "host_auth",
    "host_auth_pubname",
    "interface_address",
    "active_hostname",
    "ident",
    "received_protocol",
    "aclc",
    "aclm",
    "acl",
    "debug_selector",
    "debuglog_name",
    "spool_file_wireformat",
    "body_linecount",
    "max_received_linelength",
    "body_zerocount",
    "auth_id",
    "auth_sender",
    "allow_unqualified_recipient",
    "allow_unqualified_sender",
    "deliver_firsttime",
    "frozen",
    "N",
    "host_lookup_deferred",
    "host_lookup_failed",
    "local",
    "localerror",
    "local_scan",
    "spam_bar",
    "spam_score",
    "spam_score_int",
    "manual_thaw",
    "sender_set_untrusted",
    "tls_certificate_verified",
    "tls_cipher",
    "tls_peercert",
    "tls_peerdn",
    "tls_sni",
    "tls_ourcert",
    "tls_ocsp",
    "tls_resumption",
    "tls_ver",
    "smtputf8",
    "utf8_downcvt",
    "utf8_optdowncvt",
    "dsn_envid",
    "dsn_ret",
];

fn order_of(name: &[u8]) -> Option<usize> {
    EXIM_ORDER.iter().position(|n| n.as_bytes() == name)
}

/// The option section: every line in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpoolOptions(pub Vec<SpoolOption>);

impl SpoolOptions {
    /// The first plain line with this name.
    pub fn get(&self, name: &str) -> Option<&OptionLine> {
        self.0.iter().find_map(|o| match o {
            SpoolOption::Line(l) if l.name == name.as_bytes() => Some(l),
            _ => None,
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of the first plain line with this name.
    pub fn value(&self, name: &str) -> Option<&[u8]> {
        self.get(name).and_then(|l| l.value.as_deref())
    }

    /// A decimal option value (`-body_linecount 3`).
    pub fn number(&self, name: &str) -> Option<i64> {
        std::str::from_utf8(self.value(name)?).ok()?.trim().parse().ok()
    }

    /// Remove every plain line with this name; returns how many went.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.0.len();
        self.0.retain(|o| !matches!(o, SpoolOption::Line(l) if l.name == name.as_bytes()));
        before - self.0.len()
    }

    /// Set a plain line: replace the first one of that name in place (dropping later duplicates),
    /// or insert it where Exim would have written it.
    pub fn set(&mut self, line: OptionLine) {
        let name = line.name.clone();
        if let Some(i) = self.0.iter().position(|o| matches!(o, SpoolOption::Line(l) if l.name == name)) {
            self.0[i] = SpoolOption::Line(line);
            let mut seen = 0;
            self.0.retain(|o| {
                if matches!(o, SpoolOption::Line(l) if l.name == name) {
                    seen += 1;
                    seen == 1
                } else {
                    true
                }
            });
        } else {
            self.insert_in_exim_order(SpoolOption::Line(line));
        }
    }

    /// The message or connection ACL variable with this name (without `acl_` and scope letter).
    pub fn acl(&self, scope: AclScope, name: &[u8]) -> Option<&AclVariable> {
        self.0.iter().find_map(|o| match o {
            SpoolOption::Acl(a) if a.scope == scope && a.name == name => Some(a),
            _ => None,
        })
    }

    /// Set an ACL variable: replace its value in place, or insert it among its family sorted by
    /// name, as Exim writes them.
    pub fn set_acl(&mut self, var: AclVariable) {
        if let Some(o) =
            self.0.iter_mut().find(|o| matches!(o, SpoolOption::Acl(a) if a.scope == var.scope && a.name == var.name))
        {
            *o = SpoolOption::Acl(var);
            return;
        }
        let family = SpoolOption::Acl(var.clone());
        let fam_name = family.name().to_vec();
        // After the last member of the family whose name sorts before ours, if any.
        let pos = self.0.iter().rposition(|o| match o {
            SpoolOption::Acl(a) => a.scope == var.scope && a.name < var.name,
            _ => false,
        });
        match pos {
            Some(i) => self.0.insert(i + 1, family),
            None => {
                if let Some(i) = self.0.iter().position(|o| o.name() == fam_name.as_slice()) {
                    self.0.insert(i, family);
                } else {
                    self.insert_in_exim_order(family);
                }
            }
        }
    }

    fn insert_in_exim_order(&mut self, opt: SpoolOption) {
        let Some(rank) = order_of(opt.name()) else {
            self.0.push(opt);
            return;
        };
        let at = self.0.iter().position(|o| order_of(o.name()).is_some_and(|r| r > rank)).unwrap_or(self.0.len());
        self.0.insert(at, opt);
    }
}

/// The IP of Exim's `-host_address`: `[ip]:port`, or the older `ip.port`, or a bare IP.
pub fn host_address_ip(value: &[u8]) -> Option<std::net::IpAddr> {
    let s = std::str::from_utf8(value).ok()?.trim();
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    let (ip, port) = s.rsplit_once('.')?;
    port.parse::<u16>().ok()?;
    ip.parse().ok()
}
