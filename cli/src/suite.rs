//! `suite.json`: where a running suite is and how to call it, written by `oa up` for scripts.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "suite.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_url: Option<String>,
    /// A development token for this service (operator key; every scope of the service).
    pub token: String,
    pub log: String,
    /// The service's process id (rewritten when `oa up --restart` restarts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Every replica, the first included, when `oa up --replicas` runs more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Replica>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replica {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Suite {
    pub data_dir: String,
    pub pid: u32,
    pub services: BTreeMap<String, ServiceEntry>,
}

impl Suite {
    pub fn load(data_dir: &Path) -> anyhow::Result<Suite> {
        let path = data_dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!("cannot read {} ({e}); is `oa up` running?", path.display())
        })?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Writes `suite.json` atomically (a reader sees the old file or the new one, never half).
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let tmp = data_dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, data_dir.join(FILE))?;
        Ok(())
    }

    pub fn service(&self, name: &str) -> anyhow::Result<&ServiceEntry> {
        self.services
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("{name} is not in suite.json"))
    }
}
