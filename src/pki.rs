//! The cluster's certificate authority and what it signs. etcd serves only
//! TLS and admits only clients with a certificate from the cluster's CA:
//! the workstation (`kctl`) and each minion's helper (CN = the minion).
//!
//! Certificates are made and renewed by `kctl up` on the workstation,
//! where the CA's key stays. The pure part ([`new_ca`], [`issue`],
//! [`renewal_reason`]) decides and signs; [`ClusterPki`] keeps the files
//! (`<cluster>/pki/*.crt`, `*.key` mode 0600, the directory 0700).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long the CA and the certificates it signs are valid.
pub const CA_DAYS: i64 = 3650;
pub const LEAF_DAYS: i64 = 365;
/// `up` renews a certificate with less than this left, long before any
/// clock could catch it out.
pub const RENEW_LEAF_DAYS_LEFT: i64 = 90;
pub const RENEW_CA_DAYS_LEFT: i64 = 365;

/// The common name of the workstation's client certificate.
pub const WORKSTATION_NAME: &str = "kctl";
/// The common name the renewal signer (beside each etcd member) gives the
/// certificate it makes itself to read requests and hand out answers.
pub const SIGNER_NAME: &str = "kctl-signer";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PkiError {
    #[error("cannot make a certificate: {0}")]
    Sign(String),
    #[error("{path}: {message}")]
    #[diagnostic(help(
        "the cluster's certificates live in this directory; `kctl up` remakes what is missing"
    ))]
    File { path: String, message: String },
}

/// A certificate and its private key, PEM. The key is the secret part:
/// it is written only to files of mode 0600, never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedCert {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCert").finish_non_exhaustive()
    }
}

/// What a party needs to speak TLS with etcd: the cluster's CA
/// certificate, to check the other side, and its own certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub ca: String,
    #[serde(flatten)]
    pub own: KeyedCert,
}

/// The certificate a party should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub common_name: String,
    /// The addresses it serves at (etcd); empty for a client.
    pub ips: Vec<IpAddr>,
}

/// The name in an etcd member's server certificate.
pub const ETCD_SERVER_NAME: &str = "etcd-server";
/// The name in an etcd member's peer certificate: the only one its peers
/// accept (a member's server certificate, a minion's or the workstation's,
/// from the same CA, is refused on the peer port). The name the one key
/// all members once shared bore, so that members of both kinds admit each
/// other while `up` restarts them one at a time.
pub const ETCD_PEER_NAME: &str = "etcd";
/// What the file names of etcd's certificates begin with.
const ETCD_STEM: &str = "etcd";

/// Whether `stem` names an etcd member's certificate.
pub fn is_etcd_stem(stem: &str) -> bool {
    stem.starts_with(ETCD_STEM)
}

/// An etcd member as its certificates name it: `etcd-<name>` (serving
/// clients) and `etcd-<name>-peer` (speaking with the other members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMember {
    pub name: String,
    /// The addresses it serves at.
    pub ips: Vec<IpAddr>,
}

impl EtcdMember {
    pub fn server_stem(&self) -> String {
        format!("{ETCD_STEM}-{}", self.name)
    }
    pub fn peer_stem(&self) -> String {
        format!("{ETCD_STEM}-{}-peer", self.name)
    }
}

/// What an etcd member needs: its server certificate with the CA's, and
/// its peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCredentials {
    pub server: Credentials,
    pub peer: KeyedCert,
}

impl Wanted {
    pub fn client(name: &str) -> Wanted {
        Wanted {
            common_name: name.to_string(),
            ips: vec![],
        }
    }
    /// An etcd member: serves clients at `ips` (and on loopback, where the
    /// workstation's SSH tunnel arrives) and is its peers' client too.
    pub fn etcd(ips: &[IpAddr]) -> Wanted {
        let mut ips = ips.to_vec();
        ips.push(IpAddr::from([127, 0, 0, 1]));
        ips.sort();
        ips.dedup();
        Wanted {
            common_name: ETCD_SERVER_NAME.into(),
            ips,
        }
    }
    /// An etcd member towards its peers: named [`ETCD_PEER_NAME`] (the
    /// only name the peer port admits), at its own addresses.
    pub fn etcd_peer(ips: &[IpAddr]) -> Wanted {
        let mut ips = ips.to_vec();
        ips.sort();
        ips.dedup();
        Wanted {
            common_name: ETCD_PEER_NAME.into(),
            ips,
        }
    }
    fn is_server(&self) -> bool {
        !self.ips.is_empty()
    }
}

fn sign_error(e: rcgen::Error) -> PkiError {
    PkiError::Sign(e.to_string())
}

fn ca_name(cluster: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "kctl");
    dn.push(DnType::CommonName, format!("kctl cluster {cluster} CA"));
    dn
}

/// A new CA for `cluster`, valid from a minute before `now` (clocks of the
/// minions may lag a little) for [`CA_DAYS`].
pub fn new_ca(cluster: &str, now: OffsetDateTime) -> Result<KeyedCert, PkiError> {
    let key = KeyPair::generate().map_err(sign_error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name(cluster);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).map_err(sign_error)?;
    Ok(KeyedCert {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for `wanted`, signed by `ca`, valid for [`LEAF_DAYS`].
pub fn issue(ca: &KeyedCert, wanted: &Wanted, now: OffsetDateTime) -> Result<KeyedCert, PkiError> {
    let key = KeyPair::generate().map_err(sign_error)?;
    Ok(KeyedCert {
        cert: issue_for_key(ca, wanted, &key, now)?,
        key: key.serialize_pem(),
    })
}

/// The certificate (PEM) for `wanted` and the holder of `public_key`.
fn issue_for_key(
    ca: &KeyedCert,
    wanted: &Wanted,
    public_key: &impl rcgen::PublicKeyData,
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(sign_error)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(sign_error)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "kctl");
    dn.push(DnType::CommonName, wanted.common_name.clone());
    params.distinguished_name = dn;
    params.subject_alt_names = wanted
        .ips
        .iter()
        .map(|ip| SanType::IpAddress(*ip))
        .collect();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if wanted.is_server() {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + Duration::days(LEAF_DAYS);
    Ok(params
        .signed_by(public_key, &issuer)
        .map_err(sign_error)?
        .pem())
}

/// A new key, and the request (CSR, PEM) for a certificate of it named
/// `common_name`: what a helper sends to have its certificate renewed.
/// The key never leaves the helper.
pub fn certificate_request(common_name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(sign_error)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let request = params.serialize_request(&key).map_err(sign_error)?;
    Ok((key.serialize_pem(), request.pem().map_err(sign_error)?))
}

/// Signs minion `minion`'s renewal request `request` (PEM). Only the
/// request's key is taken, once its signature shows the requester holds
/// it: the name, uses and lifetime are those `up` gives a minion, whatever
/// the request asks for.
pub fn sign_request(
    ca: &KeyedCert,
    request: &str,
    minion: &str,
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    let request = rcgen::CertificateSigningRequestParams::from_pem(request)
        .map_err(|e| PkiError::Sign(format!("the request: {e}")))?;
    issue_for_key(ca, &Wanted::client(minion), &request.public_key, now)
}

/// Whether `cert` (PEM) is for the key `key` (PEM): a renewed
/// certificate must fit the key its helper made.
pub fn certifies_key(cert: &str, key: &str) -> bool {
    let (Ok(der), Ok(key)) = (pem_der(cert), KeyPair::from_pem(key)) else {
        return false;
    };
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    x509.public_key().raw == rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
}

/// How many whole days `cert` (PEM) has left at `now`; None if it is not
/// a certificate.
pub fn days_left(cert: &str, now: OffsetDateTime) -> Option<i64> {
    let der = pem_der(cert).ok()?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((x509.validity().not_after.timestamp() - now.unix_timestamp()).div_euclid(86_400))
}

/// Why `cert` must be made again, or None if it is good: unreadable, not
/// signed by `ca`, close to expiry (less than `days_left` days), or made
/// for another name or other addresses than `wanted`.
pub fn renewal_reason(
    cert: &str,
    ca: &str,
    wanted: Option<&Wanted>,
    days_left: i64,
    now: OffsetDateTime,
) -> Option<String> {
    let der = match pem_der(cert) {
        Ok(der) => der,
        Err(e) => return Some(e),
    };
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(&der) else {
        return Some("it is not a certificate".into());
    };
    let ca_der = match pem_der(ca) {
        Ok(der) => der,
        Err(e) => return Some(format!("the CA: {e}")),
    };
    let Ok((_, ca_x509)) = x509_parser::parse_x509_certificate(&ca_der) else {
        return Some("the CA is not a certificate".into());
    };
    if x509.verify_signature(Some(ca_x509.public_key())).is_err() {
        return Some("it is not signed by the cluster's CA".into());
    }
    let not_after = x509.validity().not_after.timestamp();
    let left = Duration::seconds(not_after - now.unix_timestamp());
    if left < Duration::days(days_left) {
        return Some(if left.is_negative() {
            "it has expired".into()
        } else {
            format!("it expires in {} days", left.whole_days())
        });
    }
    if let Some(wanted) = wanted {
        let name = x509
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok());
        if name != Some(wanted.common_name.as_str()) {
            return Some(format!("it is for {name:?}, not {:?}", wanted.common_name));
        }
        let mut ips: Vec<IpAddr> = match x509.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::IPAddress(b) => ip_of(b),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        };
        ips.sort();
        if ips != wanted.ips {
            return Some("the addresses it serves at changed".into());
        }
    }
    None
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn pem_der(text: &str) -> Result<Vec<u8>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|_| "it is not PEM".to_string())?;
    Ok(pem.contents)
}

/// The serial number of `cert` (PEM) in hex, as revocation keeps it.
pub fn serial_hex(cert: &str) -> Result<String, String> {
    serial_of(cert).map(|s| hex(&s))
}

/// The serial number of the certificate `cert` (PEM), as an unsigned
/// big-endian integer without leading zeros.
pub fn serial_of(cert: &str) -> Result<Vec<u8>, String> {
    let der = pem_der(cert)?;
    let (_, x509) =
        x509_parser::parse_x509_certificate(&der).map_err(|_| "it is not a certificate")?;
    let raw = x509.raw_serial();
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    Ok(raw[first..].to_vec())
}

/// A certificate revocation list (PEM) signed by `ca`, naming `serials`.
/// etcd reads it at every client connection (`--client-crl-file`), so a
/// revoked certificate is refused at its next handshake.
pub fn revocation_list(
    ca: &KeyedCert,
    serials: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(sign_error)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(sign_error)?;
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        // Nothing re-reads it on a schedule: it is current until replaced.
        next_update: now + Duration::days(CA_DAYS),
        crl_number: rcgen::SerialNumber::from(now.unix_timestamp().max(1) as u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(serial),
                revocation_time: now,
                reason_code: Some(rcgen::RevocationReason::CessationOfOperation),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params
        .signed_by(&issuer)
        .and_then(|crl| crl.pem())
        .map_err(sign_error)
}

/// The revocation list's file in the cluster's `pki/` (and beside etcd's
/// certificate on the machines that run it).
pub const CRL_FILE: &str = "revoked.crl";
/// The serial numbers revoked under the current CA, in hex, one a line.
const REVOKED_SERIALS_FILE: &str = "revoked-serials";

/// The cluster's certificates on the workstation.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    pub dir: PathBuf,
}

/// What [`ClusterPki::ensure`] made, and why, for `up` to report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// (file stem, reason)
    pub made: Vec<(String, String)>,
}

impl Renewed {
    pub fn contains(&self, stem: &str) -> bool {
        self.made.iter().any(|(s, _)| s == stem)
    }
}

impl ClusterPki {
    pub fn new(dir: PathBuf) -> ClusterPki {
        ClusterPki { dir }
    }

    fn stem_path(&self, stem: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{stem}.{ext}"))
    }

    pub fn minion_stem(minion: &str) -> String {
        format!("minion-{}", minion.trim_start_matches("minion-"))
    }

    /// Makes the CA and every certificate the cluster needs, and renews any
    /// that is missing, close to expiry or no longer right (another CA,
    /// other addresses). Idempotent: a second call makes nothing.
    pub fn ensure(
        &self,
        cluster: &str,
        etcd_members: &[EtcdMember],
        minions: &[String],
        now: OffsetDateTime,
    ) -> Result<Renewed, PkiError> {
        create_private_dir(&self.dir)?;
        let mut renewed = Renewed::default();
        let ca = match self.read("ca") {
            Ok(ca) => match renewal_reason(&ca.cert, &ca.cert, None, RENEW_CA_DAYS_LEFT, now) {
                None => ca,
                Some(reason) => {
                    renewed.made.push(("ca".into(), reason));
                    self.write("ca", &new_ca(cluster, now)?)?
                }
            },
            Err(_) => {
                renewed.made.push(("ca".into(), "there was none".into()));
                self.write("ca", &new_ca(cluster, now)?)?
            }
        };
        // One key per member and per use: a member's server key opens no
        // peer connection, and one member's keys speak for it alone.
        let mut wanted = vec![];
        for member in etcd_members {
            wanted.push((member.server_stem(), Wanted::etcd(&member.ips)));
            wanted.push((member.peer_stem(), Wanted::etcd_peer(&member.ips)));
        }
        wanted.push((
            WORKSTATION_NAME.to_string(),
            Wanted::client(WORKSTATION_NAME),
        ));
        // The one key all members shared, before they had their own.
        for ext in ["crt", "key"] {
            let _ = std::fs::remove_file(self.stem_path(ETCD_STEM, ext));
        }
        for m in minions {
            let stem = Self::minion_stem(m);
            if let Some(other) = minions
                .iter()
                .find(|o| *o != m && Self::minion_stem(o) == stem)
            {
                return Err(PkiError::Sign(format!(
                    "minions {other} and {m} would share the certificate files {stem}.*: name one of them otherwise"
                )));
            }
            wanted.push((stem, Wanted::client(m)));
        }
        for (stem, want) in wanted {
            let reason = match self.read(&stem) {
                Ok(have) => {
                    renewal_reason(&have.cert, &ca.cert, Some(&want), RENEW_LEAF_DAYS_LEFT, now)
                }
                Err(_) => Some("there was none".into()),
            };
            if let Some(reason) = reason {
                self.write(&stem, &issue(&ca, &want, now)?)?;
                renewed.made.push((stem, reason));
            }
        }
        // A new CA starts with nothing revoked: what the old one signed is
        // refused anyway.
        if renewed.contains("ca") {
            let _ = std::fs::remove_file(self.dir.join(REVOKED_SERIALS_FILE));
        }
        if renewed.contains("ca") || !self.crl_file().exists() {
            self.write_revocation_list(&ca, now)?;
            renewed.made.push((
                "revoked".into(),
                "the CA's revocation list was missing or stale".into(),
            ));
        }
        Ok(renewed)
    }

    /// Revokes minion `minion`'s certificate and forgets its key, so that
    /// etcd refuses the old certificate and a minion that comes back under
    /// the same id gets a new key; with it, the certificates its helper
    /// had renewed (serial numbers in hex, as [`serial_hex`] gives them).
    pub fn revoke_minion(
        &self,
        minion: &str,
        renewed: &[String],
        now: OffsetDateTime,
    ) -> Result<(), PkiError> {
        let stem = Self::minion_stem(minion);
        let pair = self.read(&stem).ok();
        let file_error = |path: &Path, e: String| PkiError::File {
            path: path.display().to_string(),
            message: e,
        };
        let mut serials: Vec<String> = renewed
            .iter()
            .filter(|s| unhex(s).is_some())
            .cloned()
            .collect();
        if let Some(pair) = &pair {
            serials
                .push(serial_hex(&pair.cert).map_err(|e| file_error(&self.cert_file(&stem), e))?);
        }
        if serials.is_empty() {
            // A cluster from before revocation has no list yet; etcd hosts
            // are given one after this.
            if !self.crl_file().exists() {
                self.write_revocation_list(&self.read("ca")?, now)?;
            }
            return Ok(());
        }
        let list = self.dir.join(REVOKED_SERIALS_FILE);
        let mut text = std::fs::read_to_string(&list).unwrap_or_default();
        for serial in serials {
            text.push_str(&serial);
            text.push('\n');
        }
        write_private(&list, &text)?;
        self.write_revocation_list(&self.read("ca")?, now)?;
        if pair.is_some() {
            for ext in ["crt", "key"] {
                let path = self.stem_path(&stem, ext);
                std::fs::remove_file(&path).map_err(|e| file_error(&path, e.to_string()))?;
            }
        }
        Ok(())
    }

    fn write_revocation_list(&self, ca: &KeyedCert, now: OffsetDateTime) -> Result<(), PkiError> {
        let serials: Vec<Vec<u8>> = std::fs::read_to_string(self.dir.join(REVOKED_SERIALS_FILE))
            .unwrap_or_default()
            .lines()
            .filter_map(unhex)
            .collect();
        write_private(&self.crl_file(), &revocation_list(ca, &serials, now)?)
    }

    pub fn crl_file(&self) -> PathBuf {
        self.dir.join(CRL_FILE)
    }

    fn read(&self, stem: &str) -> Result<KeyedCert, PkiError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|e| PkiError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        };
        Ok(KeyedCert {
            cert: read(self.stem_path(stem, "crt"))?,
            key: read(self.stem_path(stem, "key"))?,
        })
    }

    fn write(&self, stem: &str, pair: &KeyedCert) -> Result<KeyedCert, PkiError> {
        write_private(&self.stem_path(stem, "key"), &pair.key)?;
        write_private(&self.stem_path(stem, "crt"), &pair.cert)?;
        Ok(pair.clone())
    }

    fn credentials(&self, stem: &str) -> Result<Credentials, PkiError> {
        Ok(Credentials {
            ca: self.read("ca")?.cert,
            own: self.read(stem)?,
        })
    }

    /// The CA's key (PEM): for the renewal signer beside each etcd member.
    pub fn ca_key(&self) -> Result<String, PkiError> {
        Ok(self.read("ca")?.key)
    }

    /// The workstation's: what `kctl` connects to etcd with.
    pub fn workstation(&self) -> Result<Credentials, PkiError> {
        self.credentials(WORKSTATION_NAME)
    }
    /// An etcd member's, for the machine that runs it: to serve clients
    /// and to speak with its peers.
    pub fn etcd_member(&self, member: &EtcdMember) -> Result<MemberCredentials, PkiError> {
        Ok(MemberCredentials {
            server: self.credentials(&member.server_stem())?,
            peer: self.read(&member.peer_stem())?,
        })
    }
    /// A minion's helper's.
    pub fn minion(&self, minion: &str) -> Result<Credentials, PkiError> {
        self.credentials(&Self::minion_stem(minion))
    }

    pub fn ca_file(&self) -> PathBuf {
        self.stem_path("ca", "crt")
    }
    pub fn cert_file(&self, stem: &str) -> PathBuf {
        self.stem_path(stem, "crt")
    }
    pub fn key_file(&self, stem: &str) -> PathBuf {
        self.stem_path(stem, "key")
    }
}

/// The files a minion's helper keeps its etcd credentials in, in its
/// `tls/` directory: the CA's certificate, its own, and its key (0600).
pub const NODE_CA_FILE: &str = "ca.crt";
pub const NODE_CERT_FILE: &str = "node.crt";
pub const NODE_KEY_FILE: &str = "node.key";

/// Reads a helper's credentials from its `tls/` directory. Read at every
/// connection, so a renewed certificate is used without a restart.
pub fn read_node_credentials(dir: &Path) -> Result<Credentials, PkiError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))
    };
    Ok(Credentials {
        ca: read(NODE_CA_FILE)?,
        own: KeyedCert {
            cert: read(NODE_CERT_FILE)?,
            key: read(NODE_KEY_FILE)?,
        },
    })
}

fn file_error(path: &Path, e: std::io::Error) -> PkiError {
    PkiError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() || text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| file_error(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| file_error(dir, e))
}

/// Writes `text` to `path` whole and readable by its owner only, not
/// even for a moment by others (`files::write_private`).
pub fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    crate::files::write_private(path, text.as_bytes()).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap()
    }

    #[test]
    fn a_renewal_request_is_signed_for_its_minion_and_key_only() {
        let ca = new_ca("c1", now()).unwrap();
        // A request that asks for the workstation's name (root in etcd).
        let (key, request) = certificate_request(WORKSTATION_NAME).unwrap();
        let later = now() + Duration::days(300);
        let cert = sign_request(&ca, &request, "minion-2", later).unwrap();
        assert_eq!(
            renewal_reason(&cert, &ca.cert, Some(&Wanted::client("minion-2")), 0, later),
            None,
            "a minion's certificate from the CA, whatever the request named"
        );
        assert!(certifies_key(&cert, &key));
        assert!(!certifies_key(
            &cert,
            &issue(&ca, &Wanted::client("x"), now()).unwrap().key
        ));
        assert_eq!(days_left(&cert, later), Some(LEAF_DAYS));
        // A request whose signature does not hold shows no key is held.
        // (One letter of the signature, the request's last bytes, changed.)
        let mut lines: Vec<String> = request.lines().map(str::to_string).collect();
        let tail = lines.len() - 2;
        let first = if lines[tail].starts_with('A') {
            "B"
        } else {
            "A"
        };
        lines[tail].replace_range(0..1, first);
        let forged = lines.join("\n");
        assert!(sign_request(&ca, &forged, "minion-2", later).is_err());
        assert!(sign_request(&ca, "not a request", "minion-2", later).is_err());
    }

    #[test]
    fn a_revoked_minion_is_in_the_ca_signed_list_and_comes_back_with_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::new(dir.path().join("pki"));
        let minions = vec!["minion-1".to_string(), "minion-2".to_string()];
        pki.ensure("c1", &[], &minions, now()).unwrap();
        let listed = |pki: &ClusterPki| {
            let text = std::fs::read_to_string(pki.crl_file()).unwrap();
            let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes()).unwrap();
            let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).unwrap();
            let ca = pem_der(&pki.read("ca").unwrap().cert).unwrap();
            let (_, ca) = x509_parser::parse_x509_certificate(&ca).unwrap();
            crl.verify_signature(ca.public_key()).unwrap();
            crl.iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect::<Vec<_>>()
        };
        assert!(listed(&pki).is_empty());
        let old = pki.minion("minion-2").unwrap();
        pki.revoke_minion("minion-2", &[], now()).unwrap();
        let serial = serial_of(&old.own.cert).unwrap();
        let revoked = listed(&pki);
        assert_eq!(revoked.len(), 1);
        let first = revoked[0].iter().position(|b| *b != 0).unwrap_or(0);
        assert_eq!(revoked[0][first..], serial[..]);
        assert!(pki.minion("minion-2").is_err(), "its key is forgotten");
        // It comes back: a new key, and the old serial stays revoked.
        let again = pki.ensure("c1", &[], &minions, now()).unwrap();
        assert!(again.contains("minion-2") && !again.contains("revoked"));
        let new = pki.minion("minion-2").unwrap();
        assert_ne!(new.own.key, old.own.key);
        assert_ne!(serial_of(&new.own.cert).unwrap(), serial);
        assert_eq!(listed(&pki).len(), 1);
        // Unknown minions revoke nothing.
        pki.revoke_minion("minion-9", &[], now()).unwrap();
        assert_eq!(listed(&pki).len(), 1);
        // A cluster from before revocation: the list is made when needed.
        std::fs::remove_file(pki.crl_file()).unwrap();
        pki.revoke_minion("minion-9", &[], now()).unwrap();
        assert_eq!(listed(&pki).len(), 1);
        // A minion whose helper renewed its certificate: both go.
        let ca = pki.read("ca").unwrap();
        let (_, request) = certificate_request("minion-1").unwrap();
        let renewed = sign_request(&ca, &request, "minion-1", now()).unwrap();
        let renewed_serial = serial_hex(&renewed).unwrap();
        pki.revoke_minion("minion-1", std::slice::from_ref(&renewed_serial), now())
            .unwrap();
        let revoked: Vec<String> = listed(&pki).iter().map(|s| hex(s)).collect();
        assert_eq!(revoked.len(), 3);
        assert!(revoked
            .iter()
            .any(|s| s.trim_start_matches("00") == renewed_serial));
    }

    #[test]
    fn two_minions_never_share_certificate_files() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::new(dir.path().join("pki"));
        let minions = vec!["1".to_string(), "minion-1".to_string()];
        let refused = pki.ensure("c1", &[], &minions, now()).unwrap_err();
        assert!(refused.to_string().contains("share"), "{refused}");
        assert!(pki.minion("1").is_err(), "nothing made for either");
    }

    #[test]
    fn no_minion_can_bear_the_name_of_another_identity() {
        for name in [
            "root",
            WORKSTATION_NAME,
            ETCD_SERVER_NAME,
            ETCD_PEER_NAME,
            SIGNER_NAME,
        ] {
            assert!(
                crate::model::names::IDENTITY_NAMES.contains(&name),
                "{name}"
            );
            assert!(crate::model::names::minion_id_problem(name).is_some());
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_issued_certificate_is_good_until_it_nears_expiry() {
        let ca = new_ca("c1", now()).unwrap();
        let want = Wanted::etcd(&[ip("10.101.0.1")]);
        let etcd = issue(&ca, &want, now()).unwrap();
        assert_eq!(
            renewal_reason(
                &etcd.cert,
                &ca.cert,
                Some(&want),
                RENEW_LEAF_DAYS_LEFT,
                now()
            ),
            None
        );
        // 276 days on, 89 are left: renew.
        let later = now() + Duration::days(LEAF_DAYS - RENEW_LEAF_DAYS_LEFT + 1);
        let reason = renewal_reason(
            &etcd.cert,
            &ca.cert,
            Some(&want),
            RENEW_LEAF_DAYS_LEFT,
            later,
        );
        assert!(reason.unwrap().starts_with("it expires in 89 days"));
        let expired = now() + Duration::days(LEAF_DAYS + 1);
        assert_eq!(
            renewal_reason(
                &etcd.cert,
                &ca.cert,
                Some(&want),
                RENEW_LEAF_DAYS_LEFT,
                expired
            )
            .as_deref(),
            Some("it has expired")
        );
    }

    #[test]
    fn another_ca_other_addresses_or_another_name_mean_a_new_certificate() {
        let ca = new_ca("c1", now()).unwrap();
        let other_ca = new_ca("c1", now()).unwrap();
        let want = Wanted::etcd(&[ip("10.101.0.1")]);
        let etcd = issue(&ca, &want, now()).unwrap();
        assert_eq!(
            renewal_reason(&etcd.cert, &other_ca.cert, Some(&want), 90, now()).as_deref(),
            Some("it is not signed by the cluster's CA")
        );
        let moved = Wanted::etcd(&[ip("10.101.0.2")]);
        assert_eq!(
            renewal_reason(&etcd.cert, &ca.cert, Some(&moved), 90, now()).as_deref(),
            Some("the addresses it serves at changed")
        );
        let node = issue(&ca, &Wanted::client("minion-1"), now()).unwrap();
        assert!(renewal_reason(
            &node.cert,
            &ca.cert,
            Some(&Wanted::client("minion-2")),
            90,
            now()
        )
        .unwrap()
        .contains("\"minion-1\""));
        assert_eq!(
            renewal_reason("garbage", &ca.cert, None, 90, now()).as_deref(),
            Some("it is not PEM")
        );
    }

    #[test]
    fn etcd_serves_at_its_addresses_and_loopback() {
        let want = Wanted::etcd(&[ip("10.150.0.11"), ip("127.0.0.1")]);
        assert_eq!(want.ips, [ip("10.150.0.11"), ip("127.0.0.1")]);
        assert!(want.is_server());
        assert!(!Wanted::client("kctl").is_server());
    }

    #[test]
    fn ensure_makes_everything_once_with_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kctl-pki-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = ClusterPki::new(dir.join("pki"));
        let minions = ["minion-1".to_string(), "minion-2".to_string()];
        let members = [
            EtcdMember {
                name: "1".into(),
                ips: vec![ip("10.101.0.1")],
            },
            EtcdMember {
                name: "2".into(),
                ips: vec![ip("10.101.0.2")],
            },
        ];
        let first = pki.ensure("c1", &members, &minions, now()).unwrap();
        let stems: Vec<&str> = first.made.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            stems,
            [
                "ca",
                "etcd-1",
                "etcd-1-peer",
                "etcd-2",
                "etcd-2-peer",
                "kctl",
                "minion-1",
                "minion-2",
                "revoked"
            ]
        );
        // Each member's keys are its own, one for serving and one for its
        // peers, and name only its own address (and loopback, to serve).
        let one = pki.etcd_member(&members[0]).unwrap();
        let two = pki.etcd_member(&members[1]).unwrap();
        let keys = [
            &one.server.own.key,
            &one.peer.key,
            &two.server.own.key,
            &two.peer.key,
        ];
        for (i, a) in keys.iter().enumerate() {
            assert!(keys[i + 1..].iter().all(|b| b != a), "key {i} is shared");
        }
        assert_eq!(
            renewal_reason(
                &one.peer.cert,
                &one.server.ca,
                Some(&Wanted::etcd_peer(&[ip("10.101.0.1")])),
                90,
                now()
            ),
            None
        );
        assert_eq!(
            renewal_reason(
                &two.server.own.cert,
                &two.server.ca,
                Some(&Wanted::etcd(&[ip("10.101.0.2")])),
                90,
                now()
            ),
            None
        );
        let again = pki.ensure("c1", &members, &minions, now()).unwrap();
        assert_eq!(again, Renewed::default(), "nothing to do the second time");
        for stem in ["ca", "etcd-1", "etcd-2-peer", "kctl", "minion-1"] {
            let mode = std::fs::metadata(pki.key_file(stem))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{stem}.key");
        }
        let mode = std::fs::metadata(&pki.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Near the end of the leaves' life, they are renewed and the CA kept.
        let later = now() + Duration::days(300);
        let renewed = pki.ensure("c1", &members, &minions, later).unwrap();
        let stems: Vec<&str> = renewed.made.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            stems,
            [
                "etcd-1",
                "etcd-1-peer",
                "etcd-2",
                "etcd-2-peer",
                "kctl",
                "minion-1",
                "minion-2"
            ]
        );
        // A new CA means new leaves and a new revocation list.
        std::fs::remove_file(pki.key_file("ca")).unwrap();
        let remade = pki.ensure("c1", &members, &minions, later).unwrap();
        assert_eq!(remade.made.len(), 9);
        assert!(remade.contains("revoked"));
        let node = pki.minion("minion-2").unwrap();
        assert_eq!(
            renewal_reason(
                &node.own.cert,
                &node.ca,
                Some(&Wanted::client("minion-2")),
                90,
                later
            ),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
