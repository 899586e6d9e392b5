//! The files berth processes sharing one database keep there instead of in
//! each data directory (the robot accounts, the users), edited from the
//! command line.

use anyhow::{Context, Result};
use berth_storage::{MetadataStore, PostgresMetadataStore, PostgresOptions};

/// Edits the shared value `name` in `database`: `edit` gets its text (empty
/// if there is none yet) and returns the new text, or `None` to leave it.
/// A change is made only if no other came first (compare and set), else
/// `edit` runs again on the newer text.
pub fn edit_shared_value(
    database: &PostgresOptions,
    name: &str,
    mut edit: impl FnMut(&str) -> Result<Option<String>>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let metadata = PostgresMetadataStore::connect(database).await.context(
            "cannot connect to the PostgreSQL database: check --database-url \
             (BERTH_DATABASE_URL, [database] url in --config)",
        )?;
        loop {
            let old = metadata.shared_value(name).await?;
            let Some(new) = edit(old.as_deref().unwrap_or_default())? else {
                return Ok(());
            };
            let changed = match &old {
                Some(old) => metadata.replace_shared_value(name, old, &new).await?,
                None => metadata.init_shared_value(name, &new).await? == new,
            };
            if changed {
                return Ok(());
            }
        }
    })
}
