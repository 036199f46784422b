//! The integration tests of annals, and the guide's examples.
//!
//! Every page of the guide (`docs/*.md`) is one of this library's doctests modules, so each
//! of its Rust blocks compiles and runs with `cargo test -p annals-tests --doc`. The blocks
//! reuse the example crate's domains (`annals_examples::bank`, `annals_examples::shop`)
//! and the helpers below in hidden lines.

use std::path::{Path, PathBuf};

/// The PostgreSQL database the tests and the guide use: `DATABASE_URL`, by default
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Drops a PostgreSQL schema an example created (or an earlier, failed run left behind).
#[cfg(feature = "postgres")]
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let sql = format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        schema.replace('"', "\"\"")
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// A new directory under the system's temporary directory, removed with its contents on
/// drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the directory.
    pub fn new() -> std::io::Result<Self> {
        let name = format!("annals-{}", annals::Uuid::new_v4().simple());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path)?;
        Ok(TempDir(path))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The guide, one module per page.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../../docs/README.md")]
    mod index {}
    #[doc = include_str!("../../docs/concepts.md")]
    mod concepts {}
    #[doc = include_str!("../../docs/tutorial.md")]
    mod tutorial {}
    #[doc = include_str!("../../docs/aggregates.md")]
    mod aggregates {}
    #[cfg(feature = "postgres")]
    #[doc = include_str!("../../docs/stores.md")]
    mod stores {}
    #[doc = include_str!("../../docs/projections.md")]
    mod projections {}
    #[doc = include_str!("../../docs/workflows.md")]
    mod workflows {}
    #[doc = include_str!("../../docs/versioning.md")]
    mod versioning {}
    #[doc = include_str!("../../docs/testing.md")]
    mod testing {}
    #[doc = include_str!("../../docs/operations.md")]
    mod operations {}
    #[cfg(feature = "admin")]
    #[doc = include_str!("../../docs/admin.md")]
    mod admin {}
    #[doc = include_str!("../../docs/scaling-out.md")]
    mod scaling_out {}
    #[doc = include_str!("../../docs/decisions.md")]
    mod decisions {}
    #[doc = include_str!("../../docs/performance.md")]
    mod performance {}
}
