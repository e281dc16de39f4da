//! The hub's own CA and server certificate (rcgen): the CA is made once and kept; the server certificate is re-issued at every start for the names the hub is reached by.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::datadir::{DataDir, DataDirError};

/// DNS name every agent dials; it is in every server certificate.
pub const AGENT_HOSTNAME: &str = "host.docker.internal";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

/// PEM material for the listeners and for clients.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

/// The CA's parameters are derived from the hub id alone, so the issuer can be rebuilt from the stored key
/// without parsing the stored certificate.
fn ca_params(hub_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("docker-agent hub CA {hub_id}"));
    dn.push(DnType::OrganizationName, "docker-agent");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

/// Loads the CA (making it on first start) and issues a server certificate for `dns_names` and `ips`.
pub fn load_or_create(
    data_dir: &DataDir,
    hub_id: &str,
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<TlsMaterial, TlsError> {
    let (ca_pem, ca_key) = match data_dir.read_ca()? {
        Some((cert, key)) => (cert, KeyPair::from_pem(&key)?),
        None => {
            let key = KeyPair::generate()?;
            let cert = ca_params(hub_id).self_signed(&key)?;
            data_dir.write_ca(&cert.pem(), &key.serialize_pem())?;
            (cert.pem(), key)
        }
    };
    let issuer = Issuer::new(ca_params(hub_id), ca_key);

    let mut params = CertificateParams::new(dns_names.to_vec())?;
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("docker-agent hub {hub_id}"));
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(397 * 24 * 3600)).into();
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(TlsMaterial {
        ca_pem,
        server_cert_pem: cert.pem(),
        server_key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_kept_and_server_cert_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open_for_hub(dir.path()).unwrap();
        let names = vec!["localhost".to_string(), AGENT_HOSTNAME.to_string()];
        let ips = ["127.0.0.1".parse().unwrap()];
        let a = load_or_create(&dd, "hub1", &names, &ips).unwrap();
        let b = load_or_create(&dd, "hub1", &names, &ips).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_ne!(a.server_cert_pem, b.server_cert_pem);
        assert!(a.server_key_pem.contains("PRIVATE KEY"));
    }
}
