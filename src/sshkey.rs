//! SSH host keys, derived from the cluster's secret and written in
//! OpenSSH's own formats (`PROTOCOL.key` for private keys, RFC 4253/5656
//! blobs for public keys).
//!
//! Derived rather than random so that rebuilding a node gives the same keys
//! (a reflash changes nothing for SSH clients) while nobody without the key
//! store can compute them. `generation` is bumped by `--rotate-host-keys`.

use sha2::Digest;

use crate::keystore::ClusterSecret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Ed25519,
    EcdsaP256,
}

impl KeyType {
    pub(crate) const ALL: [KeyType; 2] = [KeyType::Ed25519, KeyType::EcdsaP256];

    /// The name in `/etc/ssh/ssh_host_<name>_key`.
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa",
        }
    }

    pub(crate) fn algorithm(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ssh-ed25519",
            KeyType::EcdsaP256 => "ecdsa-sha2-nistp256",
        }
    }
}

/// One host key. `Debug` leaves the private key out.
#[derive(Clone)]
pub(crate) struct HostKey {
    pub kind: KeyType,
    /// The `ssh_host_*_key` file (PEM-armoured openssh-key-v1). Secret.
    pub private_pem: String,
    /// The public key blob (algorithm name, key data).
    pub public_blob: Vec<u8>,
    /// `<algorithm> <base64> <comment>`.
    pub public_line: String,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKey({}, <private key redacted>)", self.public_line)
    }
}

impl HostKey {
    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub(crate) fn fingerprint(&self) -> String {
        let d = sha2::Sha256::digest(&self.public_blob);
        format!("SHA256:{}", base64(&d, false))
    }

    /// `<algorithm> <base64>` (no comment), as in known_hosts.
    pub(crate) fn public_key(&self) -> String {
        format!(
            "{} {}",
            self.kind.algorithm(),
            base64(&self.public_blob, true)
        )
    }
}

/// The host key of `kind` for `host`.
pub(crate) fn derive(
    secret: &ClusterSecret,
    host: &str,
    kind: KeyType,
    generation: u32,
) -> HostKey {
    let gen = generation.to_string();
    let label = |extra: &str| secret.derive("ssh-host-key", &[host, kind.algorithm(), &gen, extra]);
    let comment = format!("root@{host}");
    let check = label("checkint");
    let checkint = [
        check.first().copied().unwrap_or(0),
        check.get(1).copied().unwrap_or(0),
        check.get(2).copied().unwrap_or(0),
        check.get(3).copied().unwrap_or(0),
    ];
    let (public_blob, private_fields) = match kind {
        KeyType::Ed25519 => {
            let seed = label("seed");
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            let pk = sk.verifying_key().to_bytes();
            let mut blob = Vec::new();
            string(&mut blob, kind.algorithm().as_bytes());
            string(&mut blob, &pk);
            let mut priv_ = Vec::new();
            string(&mut priv_, kind.algorithm().as_bytes());
            string(&mut priv_, &pk);
            let mut both = seed.to_vec();
            both.extend_from_slice(&pk);
            string(&mut priv_, &both);
            (blob, priv_)
        }
        KeyType::EcdsaP256 => {
            // A scalar in [1, n): retry the (negligible) out-of-range draws.
            let sk = (0u32..)
                .find_map(|i| {
                    let b = label(&format!("scalar-{i}"));
                    p256::SecretKey::from_bytes(&b.into()).ok()
                })
                .expect("a valid P-256 scalar within a few draws");
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &sk.public_key(),
                false,
            );
            let q = point.as_bytes();
            let mut blob = Vec::new();
            string(&mut blob, kind.algorithm().as_bytes());
            string(&mut blob, b"nistp256");
            string(&mut blob, q);
            let mut priv_ = Vec::new();
            string(&mut priv_, kind.algorithm().as_bytes());
            string(&mut priv_, b"nistp256");
            string(&mut priv_, q);
            mpint(&mut priv_, &sk.to_bytes());
            (blob, priv_)
        }
    };
    // openssh-key-v1, unencrypted.
    let mut section = Vec::new();
    section.extend_from_slice(&checkint);
    section.extend_from_slice(&checkint);
    section.extend_from_slice(&private_fields);
    string(&mut section, comment.as_bytes());
    let mut pad = 1u8;
    while section.len() % 8 != 0 {
        section.push(pad);
        pad += 1;
    }
    let mut file = b"openssh-key-v1\0".to_vec();
    string(&mut file, b"none");
    string(&mut file, b"none");
    string(&mut file, b"");
    file.extend_from_slice(&1u32.to_be_bytes());
    string(&mut file, &public_blob);
    string(&mut file, &section);
    let b64 = base64(&file, true);
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(70) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    let public_line = format!(
        "{} {} {comment}",
        kind.algorithm(),
        base64(&public_blob, true)
    );
    HostKey {
        kind,
        private_pem: pem,
        public_blob,
        public_line,
    }
}

fn string(out: &mut Vec<u8>, b: &[u8]) {
    let n = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(b);
}

/// An SSH mpint of a non-negative big-endian number.
fn mpint(out: &mut Vec<u8>, b: &[u8]) {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    let mut v = Vec::new();
    if b.get(start).is_some_and(|&x| x & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(b.get(start..).unwrap_or(&[]));
    string(out, &v);
}

/// Standard base64 (RFC 4648), with or without `=` padding.
pub(crate) fn base64(b: &[u8], pad: bool) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        let k = c.len() + 1;
        for i in 0..4 {
            if i < k {
                s.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if pad {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b"", true), "");
        assert_eq!(base64(b"f", true), "Zg==");
        assert_eq!(base64(b"fo", true), "Zm8=");
        assert_eq!(base64(b"foo", true), "Zm9v");
        assert_eq!(base64(b"foob", false), "Zm9vYg");
    }

    #[test]
    fn keys_are_stable_per_host_and_secret() {
        let s = ClusterSecret::fixed("ost", [1; 32]);
        for kind in KeyType::ALL {
            let a = derive(&s, "ost01", kind, 0);
            assert_eq!(a.public_line, derive(&s, "ost01", kind, 0).public_line);
            assert_eq!(a.private_pem, derive(&s, "ost01", kind, 0).private_pem);
            assert_ne!(a.public_line, derive(&s, "ost02", kind, 0).public_line);
            assert_ne!(a.public_line, derive(&s, "ost01", kind, 1).public_line);
            let other = ClusterSecret::fixed("ost", [2; 32]);
            assert_ne!(a.public_line, derive(&other, "ost01", kind, 0).public_line);
            assert!(!format!("{a:?}").contains("PRIVATE"));
            assert!(a.fingerprint().starts_with("SHA256:"));
        }
    }
}
