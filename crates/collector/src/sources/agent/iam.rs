//! DC/OS service-account login: an RS256-signed `{"uid", "exp"}` JWT is exchanged at the
//! IAM login endpoint for a token the agent accepts as `Authorization: token=<token>`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde::Deserialize;

/// How long the signed login request stays valid.
const LOGIN_JWT_LIFETIME: Duration = Duration::from_secs(300);
/// The IAM config file is small; anything larger is not one.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The service-account file named by `agent.iam_config`.
#[derive(Deserialize)]
pub struct IamConfig {
    pub uid: String,
    pub private_key: String,
    pub login_endpoint: String,
}

impl std::fmt::Debug for IamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamConfig")
            .field("uid", &self.uid)
            .field("login_endpoint", &self.login_endpoint)
            .finish_non_exhaustive()
    }
}

impl IamConfig {
    pub fn load(path: &Path) -> Result<IamConfig, String> {
        let what = || format!("agent.iam_config {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", what()))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(format!("{}: larger than 1 MiB", what()));
        }
        let body = std::fs::read(path).map_err(|e| format!("{}: {e}", what()))?;
        let cfg: IamConfig = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "{}: expected {{\"uid\", \"private_key\", \"login_endpoint\"}}: {e}",
                what()
            )
        })?;
        if cfg.uid.is_empty() || cfg.login_endpoint.is_empty() {
            return Err(format!("{}: uid and login_endpoint must be set", what()));
        }
        Ok(cfg)
    }

    /// The signed login request token: `{"uid": uid, "exp": now + 5 min}`, RS256.
    pub fn login_jwt(&self, now: SystemTime) -> Result<String, String> {
        let key = PrivateKeyDer::from_pem_slice(self.private_key.as_bytes())
            .map_err(|e| format!("private_key: not a PEM private key: {e:?}"))?;
        let pair = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err("private_key: not an RSA key".into()),
        }
        .map_err(|e| format!("private_key: unusable RSA key: {e}"))?;
        let exp = (now + LOGIN_JWT_LIFETIME)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::to_vec(&serde_json::json!({"uid": self.uid, "exp": exp}))
            .map_err(|e| e.to_string())?;
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut sig = vec![0u8; pair.public().modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| "private_key: signing failed".to_string())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// When a token (a JWT issued by IAM) expires, read from its `exp` claim without verifying
/// it (the agent does that); `None` when it says nothing readable.
pub fn token_expiry(token: &str) -> Option<SystemTime> {
    #[derive(Deserialize)]
    struct Claims {
        exp: Option<f64>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let exp = serde_json::from_slice::<Claims>(&bytes).ok()?.exp?;
    if !exp.is_finite() || exp <= 0.0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs_f64(exp.min(1e11)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    const KEY: &str = include_str!("../../../../../tests/fixtures/mesos/iam/service-account.key");

    #[test]
    fn the_login_jwt_is_rs256_signed_with_uid_and_exp() {
        let cfg = IamConfig {
            uid: "corral".into(),
            private_key: KEY.into(),
            login_endpoint: "http://x/acs/api/v1/auth/login".into(),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let jwt = cfg.login_jwt(now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["uid"], "corral");
        assert_eq!(claims["exp"], 1_700_000_300u64);

        let der = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let pair = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).unwrap(),
            _ => panic!("fixture key is PKCS#8"),
        };
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public().as_ref());
        let input = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .unwrap();
    }

    #[test]
    fn bad_keys_and_configs_are_clear_errors() {
        let cfg = IamConfig {
            uid: "u".into(),
            private_key: "not a key".into(),
            login_endpoint: "x".into(),
        };
        assert!(cfg
            .login_jwt(SystemTime::now())
            .unwrap_err()
            .contains("private_key"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("iam.json");
        std::fs::write(&p, b"{\"uid\": 1}").unwrap();
        assert!(IamConfig::load(&p)
            .unwrap_err()
            .contains("agent.iam_config"));
        assert!(IamConfig::load(&dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn token_expiry_is_read_from_the_exp_claim() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"uid":"u","exp":1700000000}"#);
        let t = format!("h.{payload}.s");
        assert_eq!(
            token_expiry(&t),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(token_expiry("opaque"), None);
        assert_eq!(token_expiry("a.!!.c"), None);
    }
}
