//! `DynamoDbStore` on a local DynamoDB: W1 and W3 through annals, each in a fresh table
//! deleted afterwards. W2 and W4 are not run (W4 needs a global log; W2's tasks would only
//! queue behind the local server, which handles one request at a time). No raw baseline.

use annals::{DynamoDbStore, Uuid};

use crate::annals_runs;
use crate::cli::{Backend, Config, Workload};
use crate::error::BenchError;
use crate::plan;
use crate::report::{Impl, Measurement};

/// The most events one DynamoDB transaction takes (2 items per event, 100 items).
const COMMIT_EVENTS: usize = 49;

/// Runs W1 and W3 (those selected) and records their lines.
pub async fn bench(config: &Config, results: &mut Vec<Measurement>) -> Result<(), BenchError> {
    for &workload in config.workloads.iter() {
        let (n, elapsed) = match workload {
            Workload::W1 => {
                let store = table(config, workload).await?;
                let commands = plan::commands(config.n1, config.accounts);
                let run = annals_runs::sequential(store.clone(), &commands, config.accounts).await;
                store.delete_table().await?;
                (config.n1, run?)
            }
            Workload::W3 => {
                let store = table(config, workload).await?;
                let run =
                    annals_runs::rehydrate(store.clone(), config.n3, config.repeat, COMMIT_EVENTS)
                        .await;
                store.delete_table().await?;
                (config.n3, run?)
            }
            Workload::W2 | Workload::W4 | Workload::W5 | Workload::W6 | Workload::W7 => continue,
        };
        crate::record(
            results,
            Measurement {
                imp: Impl::Annals,
                backend: Backend::Dynamodb,
                workload,
                n: n as u64,
                elapsed,
                extra: Vec::new(),
            },
        );
    }
    Ok(())
}

async fn table(config: &Config, workload: Workload) -> Result<DynamoDbStore, BenchError> {
    let name = format!(
        "bench-{}-{}",
        workload.to_string().to_lowercase(),
        Uuid::new_v4().simple()
    );
    Ok(DynamoDbStore::options()
        .endpoint(&config.dynamodb_endpoint)
        .create_table(true)
        .open(&name)
        .await?)
}
