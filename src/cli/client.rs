//! A client of a running server's admin API. Every answer that is not a
//! success becomes an error carrying the server's message, so the command
//! exits non-zero and says why.

use anyhow::{bail, Context};
use serde_json::Value;

use super::args::AdminArgs;

/// The admin API of one server, as the CLI reaches it.
pub(super) struct Admin {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Admin {
    pub(super) fn new(args: &AdminArgs) -> Admin {
        Admin {
            client: reqwest::Client::new(),
            base: args.admin_url.trim_end_matches('/').to_string(),
            token: args.token.clone().filter(|t| !t.is_empty()),
        }
    }

    /// `GET path`.
    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with an optional JSON body.
    pub(super) async fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.client.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = value["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            if status == reqwest::StatusCode::UNAUTHORIZED {
                bail!("{msg} (HTTP 401; set --token or SWITCHYARD_ADMIN_TOKEN)");
            }
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(value)
    }
}
