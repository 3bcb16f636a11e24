//! Signed one-click acknowledge links: `{public_url}/ack/{id}?exp=…&by=…&sig=…`,
//! the signature an HMAC-SHA256 over site, alert, expiry and channel with
//! a key generated once into `<data_dir>/alert-link-key`. Whoever holds a
//! link may acknowledge that one alert until it expires, nothing else; the
//! API token never leaves the gateway.
//!
//! Opening the link shows a confirmation page; only its button (a `POST`)
//! acknowledges, because chat apps fetch links to preview them.

use std::path::Path;

use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this acknowledge link has expired: acknowledge on the dashboard instead")]
    Expired,
    #[error("this acknowledge link is not valid (altered or from another gateway)")]
    BadSignature,
}

#[derive(Clone)]
pub struct LinkSigner {
    site: String,
    key: Vec<u8>,
    public_url: Option<String>,
    valid_ms: i64,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("site", &self.site)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl LinkSigner {
    pub fn new(site: &str, key: Vec<u8>, public_url: Option<&str>, valid_hours: u64) -> LinkSigner {
        LinkSigner {
            site: site.into(),
            key,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            valid_ms: valid_hours.saturating_mul(3_600_000).min(i64::MAX as u64) as i64,
        }
    }

    /// With the key in `<data_dir>/alert-link-key`, generated on first start.
    pub fn load(
        site: &str,
        data_dir: &Path,
        public_url: Option<&str>,
        valid_hours: u64,
    ) -> anyhow::Result<LinkSigner> {
        let path = data_dir.join("alert-link-key");
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => {
                crate::security::secret_files::refuse_world_readable(&path, "alert link key")?;
                let text = text.trim();
                anyhow::ensure!(
                    text.len() >= 32,
                    "{} is shorter than 32 characters: delete it to generate a new key \
                     (links sent so far stop working)",
                    path.display()
                );
                text.as_bytes().to_vec()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use rand::RngCore;
                let mut bytes = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                crate::security::secret_files::write_new_private(&path, &text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                text.into_bytes()
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(LinkSigner::new(site, key, public_url, valid_hours))
    }

    /// `None` never happens (HMAC takes keys of any length); kept an
    /// `Option` so no key can panic the gateway.
    fn mac(&self, id: u64, exp_secs: i64, by: &str) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(format!("pressline-ack\n{}\n{id}\n{exp_secs}\n{by}", self.site).as_bytes());
        Some(mac)
    }

    /// The link for alert `id`, naming `by` (the channel it is sent to) as
    /// the acknowledger; `None` without `public_url`.
    pub fn link(&self, id: u64, by: &str, now_ms: i64) -> Option<String> {
        let base = self.public_url.as_ref()?;
        let exp = (now_ms + self.valid_ms).div_euclid(1000);
        let sig: String = self
            .mac(id, exp, by)?
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut url = url::Url::parse(&format!("{base}/ack/{id}")).ok()?;
        url.query_pairs_mut()
            .append_pair("exp", &exp.to_string())
            .append_pair("by", by)
            .append_pair("sig", &sig);
        Some(url.to_string())
    }

    /// Checks a link's signature (constant time) and expiry.
    pub fn verify(
        &self,
        id: u64,
        exp_secs: i64,
        by: &str,
        sig_hex: &str,
        now_ms: i64,
    ) -> Result<(), LinkError> {
        let sig = decode_hex(sig_hex).ok_or(LinkError::BadSignature)?;
        self.mac(id, exp_secs, by)
            .ok_or(LinkError::BadSignature)?
            .verify_slice(&sig)
            .map_err(|_| LinkError::BadSignature)?;
        if now_ms.div_euclid(1000) > exp_secs {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_040_000_000;

    fn parts(link: &str) -> (u64, i64, String, String) {
        let u = url::Url::parse(link).unwrap();
        let id = u.path().rsplit('/').next().unwrap().parse().unwrap();
        let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        (
            id,
            q["exp"].parse().unwrap(),
            q["by"].clone(),
            q["sig"].clone(),
        )
    }

    #[test]
    fn a_link_acknowledges_its_alert_until_it_expires() {
        let s = LinkSigner::new(
            "arena",
            b"0123456789abcdef0123456789abcdef".to_vec(),
            Some("https://gw.example:8443/"),
            72,
        );
        let link = s.link(7, "floor staff", NOW).unwrap();
        assert!(
            link.starts_with("https://gw.example:8443/ack/7?exp="),
            "{link}"
        );
        let (id, exp, by, sig) = parts(&link);
        assert_eq!(by, "floor staff");
        assert_eq!(s.verify(id, exp, &by, &sig, NOW + 3_600_000), Ok(()));
        assert_eq!(
            s.verify(id, exp, &by, &sig, NOW + 73 * 3_600_000),
            Err(LinkError::Expired)
        );
        // Another alert, a later expiry, another name, another gateway: refused.
        assert_eq!(
            s.verify(8, exp, &by, &sig, NOW),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(id, exp + 3600, &by, &sig, NOW),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(id, exp, "boss", &sig, NOW),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(id, exp, &by, "zz", NOW),
            Err(LinkError::BadSignature)
        );
        let other = LinkSigner::new(
            "arena",
            b"another key, also 32 characters!".to_vec(),
            Some("https://gw.example:8443"),
            72,
        );
        assert_eq!(
            other.verify(id, exp, &by, &sig, NOW),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn no_public_url_no_links() {
        let s = LinkSigner::new("arena", vec![1; 32], None, 72);
        assert_eq!(s.link(7, "x", NOW), None);
    }

    #[test]
    fn the_key_is_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = LinkSigner::load("arena", dir.path(), Some("http://gw"), 1).unwrap();
        let b = LinkSigner::load("arena", dir.path(), Some("http://gw"), 1).unwrap();
        assert_eq!(a.key, b.key);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("alert-link-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
}
