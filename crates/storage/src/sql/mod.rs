//! The metadata store on an SQL database: one body of SQL and rules, run by
//! an [`Engine`] per database.
//!
//! * [`Sqlite`], the embedded default: one file, one writing process.
//! * [`Postgres`], for several berth processes sharing one database.
//!
//! The statements keep to what both engines accept alike (`ON CONFLICT`,
//! recursive `WITH`, `CAST`, `$1` placeholders the SQLite engine renumbers),
//! and every rule is one transaction. Correctness between processes comes
//! from those transactions and from timestamps (see [`MetadataStore`]),
//! never from a lock held in this process.

mod conn;
mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName, Tag};

use crate::error::DatabaseErrorKind;
use crate::lookup_cache::{LookupCache, LookupKey};
use crate::metadata::*;
use crate::{StorageError, StorageResult};
use conn::{Conn, Durability, params};

pub use conn::Engine;
pub use postgres::{Postgres, PostgresOptions};
pub use sqlite::Sqlite;

/// The embedded metadata store.
pub type SqliteMetadataStore = SqlMetadataStore<Sqlite>;
/// The metadata store several berth processes share.
pub type PostgresMetadataStore = SqlMetadataStore<Postgres>;

/// Manifest lookups (tag or digest → manifest) kept in memory.
const LOOKUP_CACHE_ENTRIES: usize = 100_000;

pub struct SqlMetadataStore<E> {
    engine: Arc<E>,
    /// Kept coherent with other processes' writes by the engine.
    lookups: Arc<LookupCache>,
}

/// What a manifest or tag write makes stale in the lookup cache.
enum Stale {
    /// These lookups (possibly none: the epoch still moves on, so no lookup
    /// that raced the write caches what it read).
    Keys(Vec<LookupKey>),
    /// Every lookup in the repository.
    Repository(String),
}

impl Stale {
    /// The repository whose lookups other processes must forget, if any.
    fn repository(&self) -> Option<&str> {
        match self {
            Stale::Keys(keys) => keys.first().map(|key| key.repository.as_str()),
            Stale::Repository(name) => Some(name),
        }
    }
}

impl SqlMetadataStore<Sqlite> {
    /// Opens (creating or migrating if needed) the database file at `path`.
    pub fn open(path: &std::path::Path) -> StorageResult<Self> {
        Ok(Self::new(Sqlite::open(path)?))
    }
}

impl SqlMetadataStore<Postgres> {
    /// Connects to the database, creating or migrating its schema.
    pub async fn connect(options: &PostgresOptions) -> StorageResult<Self> {
        Ok(Self::new(Postgres::connect(options).await?))
    }
}

impl<E: Engine> SqlMetadataStore<E> {
    pub fn new(engine: E) -> Self {
        let lookups = Arc::new(LookupCache::new(LOOKUP_CACHE_ENTRIES, false));
        engine.watch_lookups(lookups.clone());
        SqlMetadataStore {
            engine: Arc::new(engine),
            lookups,
        }
    }

    /// Answers a manifest lookup from the cache, else from `sql` (which selects
    /// digest, media type and size for parameters repository and reference).
    async fn lookup_manifest(
        &self,
        repository: &RepositoryName,
        reference: &str,
        sql: &'static str,
    ) -> StorageResult<Option<ManifestRecord>> {
        let key = LookupKey {
            repository: repository.to_string(),
            reference: reference.to_owned(),
        };
        if let Some(hit) = self.lookups.get(&key) {
            return Ok(Some(hit));
        }
        let seen = self.lookups.epoch();
        let (repository, reference) = (key.repository.clone(), key.reference.clone());
        let found = self
            .read(move |conn| {
                conn.row::<(String, String, i64)>(sql, &params![&repository, &reference])?
                    .map(|(d, m, s)| manifest_record(d, m, s))
                    .transpose()
            })
            .await?;
        if let Some(record) = &found {
            self.lookups.insert(seen, key, record.clone());
        }
        Ok(found)
    }

    /// Runs `f` with `engine` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&E) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| StorageError::database(DatabaseErrorKind::Other, e))?
    }

    /// Runs `f` outside a transaction.
    async fn read<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&mut dyn Conn) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.blocking(move |engine| engine.read(&mut f)).await
    }

    /// Runs `f` in a durable transaction.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut dyn Conn) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.change(Durability::Full, None, f).await
    }

    /// [`Self::write`] for a collection's deletes, with [`Durability::Deferred`].
    async fn collect<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut dyn Conn) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.change(Durability::Deferred, None, f).await
    }

    /// [`Self::write`] for manifests and tags: then, committed or not, forgets
    /// the `stale` lookups. That happens on the blocking thread with the
    /// write itself, so it is done even when the request that asked for the
    /// write is dropped meanwhile (a client that disconnects), which would
    /// otherwise leave a moved tag answered from the cache.
    async fn write_manifests<T: Send + 'static>(
        &self,
        stale: Stale,
        f: impl FnMut(&mut dyn Conn) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.change(Durability::Full, Some(stale), f).await
    }

    /// [`Self::write_manifests`] for a collection's deletes.
    async fn collect_manifests<T: Send + 'static>(
        &self,
        stale: Stale,
        f: impl FnMut(&mut dyn Conn) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.change(Durability::Deferred, Some(stale), f).await
    }

    async fn change<T: Send + 'static>(
        &self,
        durability: Durability,
        stale: Option<Stale>,
        mut f: impl FnMut(&mut dyn Conn) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let lookups = self.lookups.clone();
        self.blocking(move |engine| {
            let announced = stale
                .as_ref()
                .and_then(Stale::repository)
                .map(str::to_owned);
            let outcome = engine.write(durability, &mut |tx| {
                let out = f(tx)?;
                if let Some(repository) = &announced {
                    engine.announce_stale(tx, repository)?;
                }
                Ok(out)
            });
            match stale {
                Some(Stale::Keys(keys)) => lookups.invalidate(keys),
                Some(Stale::Repository(name)) => lookups.invalidate_repository(&name),
                None => {}
            }
            outcome
        })
        .await
    }
}

fn repository_id(conn: &mut dyn Conn, name: &str) -> StorageResult<Option<i64>> {
    conn.value(
        "SELECT id FROM repositories WHERE name = $1",
        &params![name],
    )
}

fn ensure_repository(conn: &mut dyn Conn, name: &str) -> StorageResult<i64> {
    conn.execute(
        "INSERT INTO repositories (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        &params![name],
    )?;
    Ok(repository_id(conn, name)?.expect("repository just ensured"))
}

fn parse_digest(text: String) -> StorageResult<Digest> {
    Digest::parse(&text).map_err(|e| {
        StorageError::database(DatabaseErrorKind::Schema, format!("stored digest: {e}"))
    })
}

fn to_size(size: i64) -> u64 {
    u64::try_from(size).unwrap_or_default()
}

/// A size or count as the databases keep it.
fn sql_int(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

fn manifest_record(digest: String, media_type: String, size: i64) -> StorageResult<ManifestRecord> {
    Ok(ManifestRecord {
        digest: parse_digest(digest)?,
        media_type,
        size: to_size(size),
    })
}

/// Records the bytes of a blob or manifest document as touched now.
fn upsert_blob(conn: &mut dyn Conn, digest: &str, size: u64, now: Timestamp) -> StorageResult<()> {
    conn.execute(
        "INSERT INTO blobs (digest, size, touched_at) VALUES ($1, $2, $3)
         ON CONFLICT (digest) DO UPDATE SET touched_at = excluded.touched_at",
        &params![digest, sql_int(size), now],
    )?;
    Ok(())
}

fn blob_size(conn: &mut dyn Conn, digest: &str) -> StorageResult<u64> {
    let size: Option<i64> =
        conn.value("SELECT size FROM blobs WHERE digest = $1", &params![digest])?;
    Ok(size.map(to_size).unwrap_or_default())
}

/// Lets repository `id` read `digest`, as of `now`; returns whether the link
/// is new (and the bytes count against the repository).
fn link(conn: &mut dyn Conn, id: i64, digest: &str, now: Timestamp) -> StorageResult<bool> {
    let inserted = conn.execute(
        "INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES ($1, $2, $3)
         ON CONFLICT (repository_id, digest) DO NOTHING",
        &params![id, digest, now],
    )? == 1;
    if !inserted {
        touch_link(conn, id, digest, now)?;
    }
    Ok(inserted)
}

/// Refreshes a link; returns whether it exists.
fn touch_link(conn: &mut dyn Conn, id: i64, digest: &str, now: Timestamp) -> StorageResult<bool> {
    Ok(conn.execute(
        "UPDATE repository_blobs SET linked_at = $3 WHERE repository_id = $1 AND digest = $2",
        &params![id, digest, now],
    )? == 1)
}

fn add_bytes(conn: &mut dyn Conn, id: i64, delta: i64) -> StorageResult<()> {
    conn.execute(
        "UPDATE repositories SET bytes = CASE WHEN bytes + $2 > 0 THEN bytes + $2 ELSE 0 END
          WHERE id = $1",
        &params![id, delta],
    )?;
    Ok(())
}

/// What the repositories that count against `quota` hold together.
fn usage_of(conn: &mut dyn Conn, quota: &Quota) -> StorageResult<u64> {
    // Names are lowercase ASCII, all below '~': the prefix's range is
    // [prefix, prefix + "~"].
    let prefix = quota.repositories.literal_prefix();
    let rows: Vec<(String, i64)> = conn.rows(
        "SELECT name, bytes FROM repositories WHERE name >= $1 AND name <= $1 || '~'",
        &params![prefix],
    )?;
    Ok(rows
        .into_iter()
        .filter(|(name, _)| quota.counts(name))
        .map(|(_, bytes)| to_size(bytes))
        .sum())
}

/// Fails the write if it took `quota`'s repositories past their limit
/// (`adding` bytes are already counted).
fn check_quota(conn: &mut dyn Conn, quota: Option<&Quota>, adding: u64) -> StorageResult<()> {
    let Some(quota) = quota else { return Ok(()) };
    if adding == 0 {
        return Ok(());
    }
    let usage = usage_of(conn, quota)?;
    if usage > quota.limit {
        return Err(StorageError::QuotaExceeded {
            pattern: quota.repositories.as_str().to_owned(),
            usage: usage - adding,
            limit: quota.limit,
            adding,
        });
    }
    Ok(())
}

/// Refreshes manifest `digest` of repository `id` and every manifest
/// reachable from it through index entries and referrers: what becomes
/// reachable must not be collected by a collection that saw it unreachable.
fn touch_reachable(
    conn: &mut dyn Conn,
    id: i64,
    digest: &str,
    now: Timestamp,
) -> StorageResult<()> {
    // Starting from the manifest's own row gives the walk the digest
    // column's type and collation on every engine.
    conn.execute(
        "WITH RECURSIVE reach(digest) AS (
             SELECT digest FROM manifests WHERE repository_id = $1 AND digest = $2
             UNION
             SELECT edge.child FROM reach JOIN (
                 SELECT manifest_digest AS parent, child_digest AS child
                   FROM manifest_references WHERE repository_id = $1
                 UNION ALL
                 SELECT subject AS parent, digest AS child
                   FROM manifests WHERE repository_id = $1 AND subject IS NOT NULL
             ) edge ON edge.parent = reach.digest
         )
         UPDATE manifests SET touched_at = $3
          WHERE repository_id = $1 AND digest IN (SELECT digest FROM reach)",
        &params![id, digest, now],
    )?;
    Ok(())
}

fn immutable_error(tag: &str, immutable: &ImmutableTags) -> Option<StorageError> {
    immutable
        .pattern_for(tag)
        .map(|pattern| StorageError::TagImmutable {
            tag: tag.to_owned(),
            pattern: pattern.as_str().to_owned(),
        })
}

/// Deletes manifest `digest` of repository `id` with its references, and
/// counts its bytes out; its tags must be gone already.
fn remove_manifest(conn: &mut dyn Conn, id: i64, digest: &str, size: i64) -> StorageResult<()> {
    conn.execute(
        "DELETE FROM manifest_references WHERE repository_id = $1 AND manifest_digest = $2",
        &params![id, digest],
    )?;
    conn.execute(
        "DELETE FROM manifests WHERE repository_id = $1 AND digest = $2",
        &params![id, digest],
    )?;
    add_bytes(conn, id, -size)
}

/// The size of `digest` if repository `name` may read it.
fn linked_size(conn: &mut dyn Conn, name: &str, digest: &str) -> StorageResult<Option<i64>> {
    conn.value(
        "SELECT b.size FROM repository_blobs rb
           JOIN repositories r ON r.id = rb.repository_id
           JOIN blobs b ON b.digest = rb.digest
          WHERE r.name = $1 AND rb.digest = $2",
        &params![name, digest],
    )
}

#[async_trait]
impl<E: Engine> MetadataStore for SqlMetadataStore<E> {
    async fn ping(&self) -> StorageResult<()> {
        self.read(|conn| conn.query("SELECT 1", &[]).map(drop))
            .await
    }

    async fn blob_in_repository(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.read(move |conn| Ok(linked_size(conn, &repository, &digest)?.map(to_size)))
            .await
    }

    async fn blob_linked_under(&self, prefix: &str, digest: &Digest) -> StorageResult<bool> {
        // Names starting with "prefix/" sort from "prefix/" up to, not
        // including, "prefix0" ('0' follows '/'): a range the primary key
        // index answers, and no LIKE pattern to escape.
        let (low, high, digest) = (
            format!("{prefix}/"),
            format!("{prefix}0"),
            digest.to_string(),
        );
        self.read(move |conn| {
            conn.exists(
                "SELECT 1 FROM repository_blobs rb
                   JOIN repositories r ON r.id = rb.repository_id
                  WHERE rb.digest = $1 AND r.name >= $2 AND r.name < $3
                  LIMIT 1",
                &params![&digest, &low, &high],
            )
        })
        .await
    }

    async fn blob_recorded(&self, digest: &Digest) -> StorageResult<bool> {
        let digest = digest.to_string();
        self.read(move |conn| {
            conn.exists("SELECT 1 FROM blobs WHERE digest = $1", &params![&digest])
        })
        .await
    }

    async fn link_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
        now: Timestamp,
        quota: Option<Quota>,
    ) -> StorageResult<()> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.write(move |tx| {
            let id = ensure_repository(tx, &repository)?;
            upsert_blob(tx, &digest, size, now)?;
            if link(tx, id, &digest, now)? {
                add_bytes(tx, id, sql_int(size))?;
                check_quota(tx, quota.as_ref(), size)?;
            }
            Ok(())
        })
        .await
    }

    async fn mount_blob(
        &self,
        from: &RepositoryName,
        to: &RepositoryName,
        digest: &Digest,
        now: Timestamp,
        quota: Option<Quota>,
    ) -> StorageResult<Option<u64>> {
        let (from, to, digest) = (from.to_string(), to.to_string(), digest.to_string());
        self.write(move |tx| {
            let Some(size) = linked_size(tx, &from, &digest)? else {
                return Ok(None);
            };
            let id = ensure_repository(tx, &to)?;
            if link(tx, id, &digest, now)? {
                add_bytes(tx, id, size)?;
                check_quota(tx, quota.as_ref(), to_size(size))?;
            }
            Ok(Some(to_size(size)))
        })
        .await
    }

    async fn unlink_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        force: bool,
    ) -> StorageResult<bool> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.write(move |tx| {
            let Some(id) = repository_id(tx, &repository)? else {
                return Ok(false);
            };
            if !force {
                let user: Option<String> = tx.value(
                    "SELECT manifest_digest FROM manifest_references
                      WHERE repository_id = $1 AND child_digest = $2
                      ORDER BY manifest_digest LIMIT 1",
                    &params![id, &digest],
                )?;
                if let Some(manifest) = user {
                    return Err(StorageError::BlobInUse {
                        manifest: parse_digest(manifest)?,
                    });
                }
            }
            let unlinked = tx.execute(
                "DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2",
                &params![id, &digest],
            )? == 1;
            if unlinked {
                let size = blob_size(tx, &digest)?;
                add_bytes(tx, id, -sql_int(size))?;
            }
            Ok(unlinked)
        })
        .await
    }

    async fn resolve_tag(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> StorageResult<Option<ManifestRecord>> {
        self.lookup_manifest(
            repository,
            tag.as_str(),
            "SELECT m.digest, m.media_type, m.size FROM tags t
               JOIN repositories r ON r.id = t.repository_id
               JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
              WHERE r.name = $1 AND t.name = $2",
        )
        .await
    }

    async fn manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<ManifestRecord>> {
        self.lookup_manifest(
            repository,
            digest.as_str(),
            "SELECT m.digest, m.media_type, m.size FROM manifests m
               JOIN repositories r ON r.id = m.repository_id
              WHERE r.name = $1 AND m.digest = $2",
        )
        .await
    }

    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: NewManifest,
        tag: Option<&Tag>,
        now: Timestamp,
        rules: WriteRules,
    ) -> StorageResult<()> {
        let name = repository.to_string();
        let stale = tag.map(|t| LookupKey {
            repository: name.clone(),
            reference: t.to_string(),
        });
        let tag = tag.map(|t| t.to_string());
        let repository = name;
        self.write_manifests(Stale::Keys(stale.into_iter().collect()), move |tx| {
            let id = ensure_repository(tx, &repository)?;
            // Refreshing what it references both checks that it is there
            // and keeps a concurrent collection from taking it.
            for blob in &manifest.blobs {
                if !touch_link(tx, id, blob.as_str(), now)? && !rules.references_follow {
                    return Err(StorageError::MissingReferences(blob.clone()));
                }
            }
            // An index entry may also name a plain blob of the repository:
            // BuildKit's registry cache lists its layers and cache config
            // there, and Distribution accepts that.
            for child in &manifest.children {
                let touched = tx.execute(
                    "UPDATE manifests SET touched_at = $3 WHERE repository_id = $1 AND digest = $2",
                    &params![id, child.as_str(), now],
                )? == 1;
                if !touched && !touch_link(tx, id, child.as_str(), now)? && !rules.references_follow
                {
                    return Err(StorageError::MissingReferences(child.clone()));
                }
            }
            let digest = manifest.digest.as_str();
            upsert_blob(tx, digest, manifest.size, now)?;
            let inserted = tx.execute(
                "INSERT INTO manifests (repository_id, digest, media_type, size, artifact_type,
                                        subject, annotations, touched_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (repository_id, digest) DO NOTHING",
                &params![
                    id,
                    digest,
                    &manifest.media_type,
                    sql_int(manifest.size),
                    manifest.artifact_type.as_deref(),
                    manifest.subject.as_ref().map(Digest::as_str),
                    manifest.annotations.as_deref(),
                    now,
                ],
            )? == 1;
            if inserted {
                add_bytes(tx, id, sql_int(manifest.size))?;
            }
            for child in manifest.blobs.iter().chain(&manifest.children) {
                tx.execute(
                    "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest)
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &params![id, digest, child.as_str()],
                )?;
            }
            if let Some(tag) = &tag {
                let current: Option<String> = tx.value(
                    "SELECT digest FROM tags WHERE repository_id = $1 AND name = $2",
                    &params![id, tag],
                )?;
                if current.as_deref().is_some_and(|c| c != digest)
                    && let Some(error) = immutable_error(tag, &rules.immutable)
                {
                    return Err(error);
                }
                tx.execute(
                    "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (repository_id, name)
                     DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                    &params![id, tag, digest, now],
                )?;
            }
            // Reachable now (tagged, or re-pushed): so is what it leads to.
            touch_reachable(tx, id, digest, now)?;
            if inserted {
                check_quota(tx, rules.quota.as_ref(), manifest.size)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        immutable: ImmutableTags,
    ) -> StorageResult<bool> {
        let (name, digest) = (repository.to_string(), digest.to_string());
        // The tags that pointed at it go too: forget the repository's lookups.
        self.write_manifests(Stale::Repository(name.clone()), move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(false);
            };
            let size: Option<i64> = tx.value(
                "SELECT size FROM manifests WHERE repository_id = $1 AND digest = $2",
                &params![id, &digest],
            )?;
            let Some(size) = size else { return Ok(false) };
            let tags: Vec<String> = tx.column(
                "SELECT name FROM tags WHERE repository_id = $1 AND digest = $2",
                &params![id, &digest],
            )?;
            if let Some(error) = tags.iter().find_map(|t| immutable_error(t, &immutable)) {
                return Err(error);
            }
            tx.execute(
                "DELETE FROM tags WHERE repository_id = $1 AND digest = $2",
                &params![id, &digest],
            )?;
            remove_manifest(tx, id, &digest, size)?;
            Ok(true)
        })
        .await
    }

    async fn delete_tag(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
        immutable: ImmutableTags,
    ) -> StorageResult<bool> {
        let key = LookupKey {
            repository: repository.to_string(),
            reference: tag.to_string(),
        };
        let (repository, tag) = (key.repository.clone(), key.reference.clone());
        self.write_manifests(Stale::Keys(vec![key]), move |tx| {
            let Some(id) = repository_id(tx, &repository)? else {
                return Ok(false);
            };
            let exists = tx.exists(
                "SELECT 1 FROM tags WHERE repository_id = $1 AND name = $2",
                &params![id, &tag],
            )?;
            if !exists {
                return Ok(false);
            }
            if let Some(error) = immutable_error(&tag, &immutable) {
                return Err(error);
            }
            tx.execute(
                "DELETE FROM tags WHERE repository_id = $1 AND name = $2",
                &params![id, &tag],
            )?;
            Ok(true)
        })
        .await
    }

    async fn record_pull(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        now: Timestamp,
    ) -> StorageResult<()> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.write(move |tx| {
            tx.execute(
                "UPDATE manifests SET pulled_at = $3
                  WHERE digest = $2
                    AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                &params![&repository, &digest, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_repository(
        &self,
        repository: &RepositoryName,
        immutable: ImmutableTags,
    ) -> StorageResult<Option<Vec<String>>> {
        let name = repository.to_string();
        self.write_manifests(Stale::Repository(name.clone()), move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(None);
            };
            let tags: Vec<String> = tx.column(
                "SELECT name FROM tags WHERE repository_id = $1",
                &params![id],
            )?;
            if let Some(error) = tags.iter().find_map(|t| immutable_error(t, &immutable)) {
                return Err(error);
            }
            let uploads: Vec<String> = tx.column(
                "SELECT id FROM uploads WHERE repository = $1",
                &params![&name],
            )?;
            for statement in [
                "DELETE FROM tags WHERE repository_id = $1",
                "DELETE FROM manifest_references WHERE repository_id = $1",
                "DELETE FROM manifests WHERE repository_id = $1",
                "DELETE FROM repository_blobs WHERE repository_id = $1",
                "DELETE FROM repositories WHERE id = $1",
            ] {
                tx.execute(statement, &params![id])?;
            }
            tx.execute("DELETE FROM uploads WHERE repository = $1", &params![&name])?;
            Ok(Some(uploads))
        })
        .await
    }

    async fn tags(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Option<Vec<String>>> {
        let repository = repository.to_string();
        let after = after.unwrap_or("").to_owned();
        self.read(move |conn| {
            let Some(id) = repository_id(conn, &repository)? else {
                return Ok(None);
            };
            let tags = conn.column(
                "SELECT name FROM tags WHERE repository_id = $1 AND name > $2
                  ORDER BY name LIMIT $3",
                &params![id, &after, sql_int(limit)],
            )?;
            Ok(Some(tags))
        })
        .await
    }

    async fn repositories(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        let after = after.unwrap_or("").to_owned();
        self.read(move |conn| {
            conn.column(
                "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
                &params![&after, sql_int(limit)],
            )
        })
        .await
    }

    async fn totals(&self) -> StorageResult<StorageTotals> {
        self.read(|conn| {
            let (repositories, manifests, tags, blobs, blob_bytes) = conn
                .row::<(i64, i64, i64, i64, i64)>(
                    "SELECT (SELECT COUNT(*) FROM repositories), (SELECT COUNT(*) FROM manifests),
                            (SELECT COUNT(*) FROM tags), (SELECT COUNT(*) FROM blobs),
                            CAST((SELECT COALESCE(SUM(size), 0) FROM blobs) AS BIGINT)",
                    &[],
                )?
                .unwrap_or_default();
            Ok(StorageTotals {
                repositories: to_size(repositories),
                manifests: to_size(manifests),
                tags: to_size(tags),
                blobs: to_size(blobs),
                blob_bytes: to_size(blob_bytes),
            })
        })
        .await
    }

    async fn repository_usage(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<RepositoryUsage>> {
        let after = after.unwrap_or("").to_owned();
        self.read(move |conn| {
            let rows: Vec<(String, i64, i64, i64)> = conn.rows(
                "SELECT r.name, r.bytes,
                        (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id),
                        (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id)
                   FROM repositories r WHERE r.name > $1 ORDER BY r.name LIMIT $2",
                &params![&after, sql_int(limit)],
            )?;
            Ok(rows
                .into_iter()
                .map(|(name, bytes, manifests, tags)| RepositoryUsage {
                    name,
                    bytes: to_size(bytes),
                    manifests: to_size(manifests),
                    tags: to_size(tags),
                })
                .collect())
        })
        .await
    }

    async fn usage(&self, quota: &Quota) -> StorageResult<u64> {
        let quota = quota.clone();
        self.read(move |conn| usage_of(conn, &quota)).await
    }

    async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        limit: usize,
    ) -> StorageResult<Vec<ReferrerRecord>> {
        let (repository, subject) = (repository.to_string(), subject.to_string());
        let artifact_type = artifact_type.map(str::to_owned);
        let after = after.map(Digest::to_string);
        self.read(move |conn| {
            let rows: Vec<(String, String, i64, Option<String>, Option<String>)> = conn.rows(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
                   FROM manifests m JOIN repositories r ON r.id = m.repository_id
                  WHERE r.name = $1 AND m.subject = $2
                    AND (CAST($3 AS TEXT) IS NULL OR m.artifact_type = $3)
                    AND (CAST($4 AS TEXT) IS NULL OR m.digest > $4)
                  ORDER BY m.digest
                  LIMIT $5",
                &params![
                    &repository,
                    &subject,
                    artifact_type.as_deref(),
                    after.as_deref(),
                    sql_int(limit)
                ],
            )?;
            rows.into_iter()
                .map(|(digest, media_type, size, artifact_type, annotations)| {
                    Ok(ReferrerRecord {
                        digest: parse_digest(digest)?,
                        media_type,
                        size: to_size(size),
                        artifact_type,
                        annotations,
                    })
                })
                .collect()
        })
        .await
    }

    async fn create_upload(
        &self,
        id: &str,
        repository: &RepositoryName,
        owner: &str,
        now: Timestamp,
    ) -> StorageResult<()> {
        let (id, repository, owner) = (id.to_owned(), repository.to_string(), owner.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO uploads (id, repository, owner, updated_at) VALUES ($1, $2, $3, $4)",
                &params![&id, &repository, &owner, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn upload(&self, id: &str) -> StorageResult<Option<UploadRecord>> {
        let id = id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .row::<(String, String, Option<String>, i64)>(
                    "SELECT id, repository, owner, updated_at FROM uploads WHERE id = $1",
                    &params![&id],
                )?
                .map(|(id, repository, owner, updated_at)| UploadRecord {
                    id,
                    repository,
                    owner,
                    updated_at,
                }))
        })
        .await
    }

    async fn claim_upload(
        &self,
        id: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StorageResult<bool> {
        let (id, holder) = (id.to_owned(), holder.to_owned());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE uploads SET updated_at = $3, holder = $2, held_until = $4
                  WHERE id = $1 AND (holder IS NULL OR holder = $2 OR held_until < $3)",
                &params![&id, &holder, now, until],
            )? == 1)
        })
        .await
    }

    async fn release_upload(&self, id: &str, holder: &str, now: Timestamp) -> StorageResult<()> {
        let (id, holder) = (id.to_owned(), holder.to_owned());
        self.write(move |tx| {
            tx.execute(
                "UPDATE uploads SET updated_at = $3, holder = NULL, held_until = 0
                  WHERE id = $1 AND holder = $2",
                &params![&id, &holder, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn release_upload_claims(&self) -> StorageResult<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE uploads SET holder = NULL, held_until = 0 WHERE holder IS NOT NULL",
                &params![],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> StorageResult<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.execute("DELETE FROM uploads WHERE id = $1", &params![&id])?;
            Ok(())
        })
        .await
    }

    async fn stale_uploads(
        &self,
        before: Timestamp,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>> {
        let after = after.map(str::to_owned);
        self.read(move |conn| {
            conn.column(
                "SELECT id FROM uploads WHERE updated_at < $1 AND (CAST($2 AS TEXT) IS NULL OR id > $2)
                  ORDER BY id LIMIT $3",
                &params![before, after.as_deref(), sql_int(limit)],
            )
        })
        .await
    }

    async fn delete_stale_upload(
        &self,
        id: &str,
        before: Timestamp,
        now: Timestamp,
    ) -> StorageResult<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM uploads
                  WHERE id = $1 AND updated_at < $2 AND (holder IS NULL OR held_until < $3)",
                &params![&id, before, now],
            )? == 1)
        })
        .await
    }

    async fn gc_snapshot(&self) -> StorageResult<GcSnapshot> {
        self.blocking(|engine| engine.snapshot(&mut read_snapshot))
            .await
    }

    async fn delete_tags_if_unchanged(
        &self,
        repository: &str,
        tags: Vec<TagSnapshot>,
        pulled_before: Timestamp,
    ) -> StorageResult<Vec<String>> {
        let name = repository.to_owned();
        self.collect_manifests(Stale::Repository(name.clone()), move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(Vec::new());
            };
            let mut deleted = Vec::new();
            for tag in &tags {
                let gone = tx.execute(
                    "DELETE FROM tags WHERE repository_id = $1 AND name = $2 AND digest = $3
                        AND updated_at = $4
                        AND NOT EXISTS (SELECT 1 FROM manifests m
                                         WHERE m.repository_id = $1 AND m.digest = $3
                                           AND COALESCE(m.pulled_at, 0) >= $5)",
                    &params![
                        id,
                        &tag.name,
                        tag.digest.as_str(),
                        tag.updated_at,
                        pulled_before
                    ],
                )? == 1;
                if gone {
                    deleted.push(tag.name.clone());
                }
            }
            Ok(deleted)
        })
        .await
    }

    async fn delete_manifests_if_untouched(
        &self,
        repository: &str,
        digests: Vec<Digest>,
        before: Timestamp,
        pulled_before: Timestamp,
    ) -> StorageResult<Vec<Digest>> {
        let name = repository.to_owned();
        self.collect_manifests(Stale::Repository(name.clone()), move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(Vec::new());
            };
            // An index goes before its entries: repeat while anything goes.
            let mut left = digests.clone();
            let mut deleted = Vec::new();
            loop {
                let before_pass = deleted.len();
                let mut kept = Vec::new();
                for digest in left {
                    let size: Option<i64> = tx.value(
                        "SELECT m.size FROM manifests m
                          WHERE m.repository_id = $1 AND m.digest = $2 AND m.touched_at < $3
                            AND COALESCE(m.pulled_at, 0) < $4
                            AND NOT EXISTS (SELECT 1 FROM tags t
                                             WHERE t.repository_id = $1 AND t.digest = $2)
                            AND NOT EXISTS (SELECT 1 FROM manifest_references r
                                             WHERE r.repository_id = $1 AND r.child_digest = $2)",
                        &params![id, digest.as_str(), before, pulled_before],
                    )?;
                    match size {
                        Some(size) => {
                            remove_manifest(tx, id, digest.as_str(), size)?;
                            deleted.push(digest);
                        }
                        None => kept.push(digest),
                    }
                }
                left = kept;
                if deleted.len() == before_pass || left.is_empty() {
                    return Ok(deleted);
                }
            }
        })
        .await
    }

    async fn delete_links_if_unreferenced(
        &self,
        repository: &str,
        links: Vec<LinkSnapshot>,
        before: Timestamp,
    ) -> StorageResult<Vec<Digest>> {
        let name = repository.to_owned();
        self.collect(move |tx| {
            let Some(id) = repository_id(tx, &name)? else {
                return Ok(Vec::new());
            };
            let mut deleted = Vec::new();
            // Sizes never change under a digest: the snapshot's are right.
            let mut freed = 0i64;
            for link in &links {
                let gone = tx.execute(
                    "DELETE FROM repository_blobs
                      WHERE repository_id = $1 AND digest = $2 AND linked_at < $3
                        AND NOT EXISTS (SELECT 1 FROM manifest_references r
                                         WHERE r.repository_id = $1 AND r.child_digest = $2)",
                    &params![id, link.digest.as_str(), before],
                )? == 1;
                if gone {
                    freed += sql_int(link.size);
                    deleted.push(link.digest.clone());
                }
            }
            add_bytes(tx, id, -freed)?;
            Ok(deleted)
        })
        .await
    }

    async fn forget_blobs_if_unused(
        &self,
        digests: Vec<Digest>,
        before: Timestamp,
    ) -> StorageResult<Vec<Digest>> {
        // Durable before the bytes go: a blob recorded again after a power
        // cut must have them.
        self.write(move |tx| {
            let mut forgotten = Vec::new();
            for digest in &digests {
                let gone = tx.execute(
                    "DELETE FROM blobs WHERE digest = $1 AND touched_at < $2
                        AND NOT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = $1)
                        AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = $1)",
                    &params![digest.as_str(), before],
                )? == 1;
                if gone {
                    forgotten.push(digest.clone());
                }
            }
            Ok(forgotten)
        })
        .await
    }

    async fn recorded_blobs(&self, digests: Vec<Digest>) -> StorageResult<Vec<Digest>> {
        self.read(move |conn| {
            let mut recorded = Vec::new();
            for digest in &digests {
                if conn.exists(
                    "SELECT 1 FROM blobs WHERE digest = $1",
                    &params![digest.as_str()],
                )? {
                    recorded.push(digest.clone());
                }
            }
            Ok(recorded)
        })
        .await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StorageResult<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |tx| {
            Ok(tx.execute(
                "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $4)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                  WHERE leases.until < $3 OR leases.holder = excluded.holder",
                &params![&name, &holder, now, until],
            )? == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StorageResult<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &params![&name, &holder],
            )?;
            Ok(())
        })
        .await
    }

    async fn shared_value(&self, name: &str) -> StorageResult<Option<String>> {
        let name = name.to_owned();
        self.read(move |conn| {
            conn.value(
                "SELECT value FROM shared_values WHERE name = $1",
                &params![&name],
            )
        })
        .await
    }

    async fn init_shared_value(&self, name: &str, initial: &str) -> StorageResult<String> {
        let (name, initial) = (name.to_owned(), initial.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO shared_values (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO NOTHING",
                &params![&name, &initial],
            )?;
            Ok(tx
                .value(
                    "SELECT value FROM shared_values WHERE name = $1",
                    &params![&name],
                )?
                .expect("shared value just ensured"))
        })
        .await
    }

    async fn replace_shared_value(
        &self,
        name: &str,
        expected: &str,
        value: &str,
    ) -> StorageResult<bool> {
        let (name, expected, value) = (name.to_owned(), expected.to_owned(), value.to_owned());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE shared_values SET value = $3 WHERE name = $1 AND value = $2",
                &params![&name, &expected, &value],
            )? == 1)
        })
        .await
    }
}

/// Reads everything collection decides from.
fn read_snapshot(conn: &mut dyn Conn) -> StorageResult<GcSnapshot> {
    let mut repositories: Vec<RepositorySnapshot> = Vec::new();
    let mut index: HashMap<i64, usize> = HashMap::new();
    for (id, name) in
        conn.rows::<(i64, String)>("SELECT id, name FROM repositories ORDER BY name", &[])?
    {
        index.insert(id, repositories.len());
        repositories.push(RepositorySnapshot {
            name,
            ..RepositorySnapshot::default()
        });
    }
    let mut references: HashMap<(i64, String), Vec<Digest>> = HashMap::new();
    for (id, manifest, child) in conn.rows::<(i64, String, String)>(
        "SELECT repository_id, manifest_digest, child_digest FROM manifest_references",
        &[],
    )? {
        references
            .entry((id, manifest))
            .or_default()
            .push(parse_digest(child)?);
    }
    for (id, digest, size, subject, touched_at, pulled_at) in
        conn.rows::<(i64, String, i64, Option<String>, i64, Option<i64>)>(
            "SELECT repository_id, digest, size, subject, touched_at, pulled_at FROM manifests",
            &[],
        )?
    {
        let Some(&at) = index.get(&id) else { continue };
        let references = references.remove(&(id, digest.clone())).unwrap_or_default();
        repositories[at].manifests.push(ManifestSnapshot {
            digest: parse_digest(digest)?,
            size: to_size(size),
            subject: subject.map(parse_digest).transpose()?,
            references,
            touched_at,
            pulled_at,
        });
    }
    for (id, name, digest, updated_at) in conn.rows::<(i64, String, String, i64)>(
        "SELECT repository_id, name, digest, updated_at FROM tags",
        &[],
    )? {
        let Some(&at) = index.get(&id) else { continue };
        repositories[at].tags.push(TagSnapshot {
            name,
            digest: parse_digest(digest)?,
            updated_at,
        });
    }
    for (id, digest, size, linked_at) in conn.rows::<(i64, String, i64, i64)>(
        "SELECT rb.repository_id, rb.digest, b.size, rb.linked_at
           FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest",
        &[],
    )? {
        let Some(&at) = index.get(&id) else { continue };
        repositories[at].links.push(LinkSnapshot {
            digest: parse_digest(digest)?,
            size: to_size(size),
            linked_at,
        });
    }
    let blobs = conn
        .rows::<(String, i64, i64)>("SELECT digest, size, touched_at FROM blobs", &[])?
        .into_iter()
        .map(|(digest, size, touched_at)| {
            Ok(BlobSnapshot {
                digest: parse_digest(digest)?,
                size: to_size(size),
                touched_at,
            })
        })
        .collect::<StorageResult<_>>()?;
    Ok(GcSnapshot {
        repositories,
        blobs,
    })
}
#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    use super::*;
    use berth_oci::{RepositoryPattern, TagPattern};
    use std::time::Duration;

    fn manifest(content: &str) -> NewManifest {
        NewManifest {
            digest: Digest::sha256_of(content.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            size: content.len() as u64,
            artifact_type: None,
            subject: None,
            annotations: None,
            blobs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// A client that disconnects while its push is being written drops the
    /// request future; the write still commits, and the tag must not go on
    /// being answered from the cache with the manifest it had before.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_write_whose_request_is_dropped_still_refreshes_lookups() {
        let (_dir, store) = open_sqlite();
        let repository = RepositoryName::parse("app").unwrap();
        let tag = Tag::parse("latest").unwrap();
        let (old, new) = (manifest("one"), manifest("two"));
        store
            .put_manifest(
                &repository,
                old.clone(),
                Some(&tag),
                1,
                WriteRules::default(),
            )
            .await
            .unwrap();
        let cached = store.resolve_tag(&repository, &tag).await.unwrap().unwrap();
        assert_eq!(cached.digest, old.digest);

        // Polled once (the write starts on its blocking thread), then dropped.
        {
            let mut push = pin!(store.put_manifest(
                &repository,
                new.clone(),
                Some(&tag),
                2,
                WriteRules::default()
            ));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(matches!(push.as_mut().poll(&mut cx), Poll::Pending));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = store.resolve_tag(&repository, &tag).await.unwrap().unwrap();
            if now.digest == new.digest {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the tag still answers {}",
                now.digest
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn open_sqlite() -> (tempfile::TempDir, SqliteMetadataStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetadataStore::open(&dir.path().join("metadata.db")).unwrap();
        (dir, store)
    }

    async fn open_postgres(url: &str) -> PostgresMetadataStore {
        let options = PostgresOptions {
            url: url.to_owned(),
            password: None,
            pool_size: 8,
            timeout: Duration::from_secs(10),
            tls: None,
        };
        PostgresMetadataStore::connect(&options).await.unwrap()
    }

    /// Runs each store test on both engines.
    macro_rules! on_every_engine {
        ($($test:ident),* $(,)?) => {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread")]
                    async fn $test() {
                        let (_dir, store) = super::open_sqlite();
                        super::$test(&store).await
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread")]
                    async fn $test() {
                        let url = berth_testkit::postgres().database();
                        super::$test(&super::open_postgres(&url).await).await
                    }
                )*
            }
        };
    }

    on_every_engine!(
        a_manifest_needs_its_blobs_and_records_nothing_without_them,
        quotas_count_what_repositories_hold_together,
        blobs_linked_under_a_prefix,
        immutable_tags_are_neither_moved_nor_deleted,
        a_blob_a_manifest_uses_is_deleted_only_by_force,
        tags_go_only_unchanged_and_unpulled,
        collection_deletes_only_what_is_still_unused,
        tagging_refreshes_what_the_tag_makes_reachable,
        one_holder_of_a_lease_at_a_time,
        the_first_value_offered_is_shared,
        listings_page_in_byte_order,
        referrers_filter_and_page,
        uploads_expire_only_when_stale,
        an_upload_has_one_writer_at_a_time,
    );

    fn name(text: &str) -> RepositoryName {
        RepositoryName::parse(text).unwrap()
    }

    fn image(content: &str, blobs: &[&Digest]) -> NewManifest {
        NewManifest {
            blobs: blobs.iter().map(|d| (*d).clone()).collect(),
            ..manifest(content)
        }
    }

    async fn bytes_of(store: &dyn MetadataStore, repository: &str) -> u64 {
        store
            .repository_usage(None, 100)
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.name == repository)
            .map_or(0, |u| u.bytes)
    }

    async fn a_manifest_needs_its_blobs_and_records_nothing_without_them(
        store: &dyn MetadataStore,
    ) {
        let app = name("team/app");
        let layer = Digest::sha256_of(b"layer");
        let pushed = image("m", &[&layer]);
        let refused = store
            .put_manifest(&app, pushed.clone(), None, 10, WriteRules::default())
            .await;
        assert!(matches!(refused, Err(StorageError::MissingReferences(d)) if d == layer));
        assert!(!store.blob_recorded(&pushed.digest).await.unwrap());
        store.link_blob(&app, &layer, 5, 10, None).await.unwrap();
        store
            .put_manifest(&app, pushed.clone(), None, 11, WriteRules::default())
            .await
            .unwrap();
        assert_eq!(bytes_of(store, "team/app").await, 5 + pushed.size);
    }

    async fn quotas_count_what_repositories_hold_together(store: &dyn MetadataStore) {
        let quota = Quota {
            repositories: RepositoryPattern::parse("team/**").unwrap(),
            limit: 10,
            excluded: vec![],
        };
        let (a, b) = (name("team/a"), name("team/b"));
        let blob = |n: u8| Digest::sha256_of(&[n]);
        store
            .link_blob(&a, &blob(1), 6, 1, Some(quota.clone()))
            .await
            .unwrap();
        // Linking the same blob again adds nothing.
        store
            .link_blob(&a, &blob(1), 6, 2, Some(quota.clone()))
            .await
            .unwrap();
        let refused = store
            .link_blob(&b, &blob(2), 5, 3, Some(quota.clone()))
            .await;
        match refused {
            Err(StorageError::QuotaExceeded {
                pattern,
                usage,
                limit,
                adding,
            }) => assert_eq!(
                (pattern.as_str(), usage, limit, adding),
                ("team/**", 6, 10, 5)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.usage(&quota).await.unwrap(), 6);
        assert!(
            store
                .blob_in_repository(&b, &blob(2))
                .await
                .unwrap()
                .is_none()
        );
        // Mounting counts in the repository it goes to.
        assert!(matches!(
            store
                .mount_blob(&a, &b, &blob(1), 4, Some(quota.clone()))
                .await,
            Err(StorageError::QuotaExceeded { .. })
        ));
        store
            .link_blob(&b, &blob(2), 4, 5, Some(quota.clone()))
            .await
            .unwrap();
        assert_eq!(store.usage(&quota).await.unwrap(), 10);
        // Outside the pattern, nothing counts.
        store
            .link_blob(&name("other/x"), &blob(3), 99, 6, None)
            .await
            .unwrap();
        assert_eq!(store.usage(&quota).await.unwrap(), 10);
    }

    async fn blobs_linked_under_a_prefix(store: &dyn MetadataStore) {
        let digest = Digest::sha256_of(b"layer");
        for repository in ["hubx/app", "hu/b", "hub"] {
            store
                .link_blob(&name(repository), &digest, 5, 1, None)
                .await
                .unwrap();
        }
        assert!(!store.blob_linked_under("hub", &digest).await.unwrap());
        store
            .link_blob(&name("hub/library/app"), &digest, 5, 1, None)
            .await
            .unwrap();
        assert!(store.blob_linked_under("hub", &digest).await.unwrap());
        assert!(
            store
                .blob_linked_under("hub/library", &digest)
                .await
                .unwrap()
        );
        let other = Digest::sha256_of(b"other");
        assert!(!store.blob_linked_under("hub", &other).await.unwrap());
    }

    async fn immutable_tags_are_neither_moved_nor_deleted(store: &dyn MetadataStore) {
        let app = name("prod/app");
        let rules = WriteRules {
            quota: None,
            immutable: ImmutableTags(vec![TagPattern::parse("v*").unwrap()]),
            references_follow: false,
        };
        let (one, two) = (manifest("one"), manifest("two"));
        let v1 = Tag::parse("v1").unwrap();
        store
            .put_manifest(&app, one.clone(), Some(&v1), 1, rules.clone())
            .await
            .unwrap();
        // The same content again is no move.
        store
            .put_manifest(&app, one.clone(), Some(&v1), 2, rules.clone())
            .await
            .unwrap();
        let moved = store
            .put_manifest(&app, two.clone(), Some(&v1), 3, rules.clone())
            .await;
        assert!(
            matches!(moved, Err(StorageError::TagImmutable { tag, pattern })
            if tag == "v1" && pattern == "v*")
        );
        assert_eq!(
            store.resolve_tag(&app, &v1).await.unwrap().unwrap().digest,
            one.digest
        );
        assert!(store.manifest(&app, &two.digest).await.unwrap().is_none());
        assert!(matches!(
            store.delete_tag(&app, &v1, rules.immutable.clone()).await,
            Err(StorageError::TagImmutable { .. })
        ));
        assert!(matches!(
            store
                .delete_manifest(&app, &one.digest, rules.immutable.clone())
                .await,
            Err(StorageError::TagImmutable { .. })
        ));
        // Mutable tags move freely.
        let latest = Tag::parse("latest").unwrap();
        for m in [&one, &two] {
            store
                .put_manifest(&app, (*m).clone(), Some(&latest), 4, rules.clone())
                .await
                .unwrap();
        }
    }

    async fn a_blob_a_manifest_uses_is_deleted_only_by_force(store: &dyn MetadataStore) {
        let app = name("app");
        let layer = Digest::sha256_of(b"layer");
        store.link_blob(&app, &layer, 5, 1, None).await.unwrap();
        let m = image("m", &[&layer]);
        store
            .put_manifest(&app, m.clone(), None, 1, WriteRules::default())
            .await
            .unwrap();
        assert!(matches!(
            store.unlink_blob(&app, &layer, false).await,
            Err(StorageError::BlobInUse { manifest }) if manifest == m.digest
        ));
        assert!(store.unlink_blob(&app, &layer, true).await.unwrap());
        assert!(!store.unlink_blob(&app, &layer, true).await.unwrap());
        assert_eq!(bytes_of(store, "app").await, m.size);
    }

    /// A tag goes only if it still names what the collector saw, and its
    /// manifest was not pulled since the cutoff.
    async fn tags_go_only_unchanged_and_unpulled(store: &dyn MetadataStore) {
        let app = name("app");
        let m = image("m", &[]);
        let v1 = Tag::parse("v1").unwrap();
        store
            .put_manifest(&app, m.clone(), Some(&v1), 10, WriteRules::default())
            .await
            .unwrap();
        let seen = |updated_at| TagSnapshot {
            name: "v1".into(),
            digest: m.digest.clone(),
            updated_at,
        };
        let delete =
            |tag, pulled_before| store.delete_tags_if_unchanged("app", vec![tag], pulled_before);
        assert!(delete(seen(9), 20).await.unwrap().is_empty(), "moved since");
        store.record_pull(&app, &m.digest, 15).await.unwrap();
        assert!(
            delete(seen(10), 15).await.unwrap().is_empty(),
            "pulled since"
        );
        assert_eq!(delete(seen(10), 16).await.unwrap(), ["v1"]);
    }

    /// Collection deletes only what is unreferenced now and untouched since
    /// its cutoff, whatever it saw when it planned.
    async fn collection_deletes_only_what_is_still_unused(store: &dyn MetadataStore) {
        let app = name("app");
        let (used, unused) = (Digest::sha256_of(b"used"), Digest::sha256_of(b"unused"));
        store.link_blob(&app, &used, 4, 10, None).await.unwrap();
        store.link_blob(&app, &unused, 6, 10, None).await.unwrap();
        let m = image("m", &[&used]);
        store
            .put_manifest(&app, m.clone(), None, 10, WriteRules::default())
            .await
            .unwrap();
        let both = vec![used.clone(), unused.clone()];
        let links = |digests: &[&Digest]| -> Vec<LinkSnapshot> {
            digests
                .iter()
                .map(|d| LinkSnapshot {
                    digest: (*d).clone(),
                    size: if *d == &used { 4 } else { 6 },
                    linked_at: 0,
                })
                .collect()
        };
        // Linked at 10: not before a cutoff of 10.
        assert!(
            store
                .delete_links_if_unreferenced("app", links(&[&used, &unused]), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .delete_links_if_unreferenced("app", links(&[&used, &unused]), 11)
                .await
                .unwrap(),
            std::slice::from_ref(&unused)
        );
        // A blob still linked stays recorded.
        assert_eq!(
            store
                .forget_blobs_if_unused(both.clone(), 11)
                .await
                .unwrap(),
            std::slice::from_ref(&unused)
        );
        assert!(store.blob_recorded(&used).await.unwrap());
        assert!(!store.blob_recorded(&unused).await.unwrap());
        assert_eq!(bytes_of(store, "app").await, 4 + m.size);

        // An untagged manifest goes, unless pulled since the second cutoff
        // (a pull in progress); a tagged one, or one touched since, stays.
        store.record_pull(&app, &m.digest, 11).await.unwrap();
        assert!(
            store
                .delete_manifests_if_untouched("app", vec![m.digest.clone()], 11, 11)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .delete_manifests_if_untouched("app", vec![m.digest.clone()], 11, 12)
                .await
                .unwrap(),
            std::slice::from_ref(&m.digest)
        );
        assert_eq!(
            store
                .delete_links_if_unreferenced("app", links(&[&used]), 11)
                .await
                .unwrap(),
            std::slice::from_ref(&used)
        );
        assert_eq!(bytes_of(store, "app").await, 0);
    }

    async fn tagging_refreshes_what_the_tag_makes_reachable(store: &dyn MetadataStore) {
        let app = name("app");
        let rules = WriteRules::default;
        let child = manifest("child");
        store
            .put_manifest(&app, child.clone(), None, 1, rules())
            .await
            .unwrap();
        let index = NewManifest {
            children: vec![child.digest.clone()],
            ..manifest("index")
        };
        store
            .put_manifest(&app, index.clone(), None, 1, rules())
            .await
            .unwrap();
        let signature = NewManifest {
            subject: Some(index.digest.clone()),
            ..manifest("signature")
        };
        store
            .put_manifest(&app, signature.clone(), None, 1, rules())
            .await
            .unwrap();
        // A collection planned at 5 saw all three unreachable; then the
        // index was tagged.
        let tag = Tag::parse("v1").unwrap();
        store
            .put_manifest(&app, index.clone(), Some(&tag), 7, rules())
            .await
            .unwrap();
        let all = vec![
            index.digest.clone(),
            child.digest.clone(),
            signature.digest.clone(),
        ];
        assert!(
            store
                .delete_manifests_if_untouched("app", all.clone(), 6, 6)
                .await
                .unwrap()
                .is_empty()
        );
        // Untagged again, they go together, the index before its child.
        store
            .delete_tag(&app, &tag, ImmutableTags::default())
            .await
            .unwrap();
        let deleted = store
            .delete_manifests_if_untouched("app", all, 8, 8)
            .await
            .unwrap();
        assert_eq!(deleted.len(), 3, "{deleted:?}");
    }

    async fn one_holder_of_a_lease_at_a_time(store: &dyn MetadataStore) {
        assert!(store.take_lease("gc", "a", 100, 160).await.unwrap());
        assert!(!store.take_lease("gc", "b", 150, 210).await.unwrap());
        assert!(
            store.take_lease("gc", "a", 150, 210).await.unwrap(),
            "renewed"
        );
        assert!(
            store.take_lease("gc", "b", 211, 270).await.unwrap(),
            "expired"
        );
        store.release_lease("gc", "b").await.unwrap();
        assert!(store.take_lease("gc", "a", 212, 270).await.unwrap());
    }

    async fn the_first_value_offered_is_shared(store: &dyn MetadataStore) {
        assert_eq!(store.shared_value("key").await.unwrap(), None);
        assert_eq!(
            store.init_shared_value("key", "first").await.unwrap(),
            "first"
        );
        assert_eq!(
            store.init_shared_value("key", "second").await.unwrap(),
            "first"
        );
        assert_eq!(store.init_shared_value("other", "x").await.unwrap(), "x");
        // Changed only from what the changer read.
        assert!(
            !store
                .replace_shared_value("key", "stale", "mine")
                .await
                .unwrap()
        );
        assert!(
            store
                .replace_shared_value("key", "first", "mine")
                .await
                .unwrap()
        );
        assert_eq!(
            store.shared_value("key").await.unwrap().as_deref(),
            Some("mine")
        );
    }

    async fn listings_page_in_byte_order(store: &dyn MetadataStore) {
        let blob = Digest::sha256_of(b"layer");
        // '-' (0x2d) sorts before '/' (0x2f): byte order, not a locale's.
        for repository in ["b", "a/z", "a-b", "a", "a/b"] {
            store
                .link_blob(&name(repository), &blob, 1, 1, None)
                .await
                .unwrap();
        }
        assert_eq!(
            store.repositories(None, 10).await.unwrap(),
            ["a", "a-b", "a/b", "a/z", "b"]
        );
        assert_eq!(
            store.repositories(Some("a-b"), 2).await.unwrap(),
            ["a/b", "a/z"]
        );
        let app = name("a");
        for tag in ["v2", "_x", "v10", "V1"] {
            store
                .put_manifest(
                    &app,
                    manifest(tag),
                    Some(&Tag::parse(tag).unwrap()),
                    2,
                    WriteRules::default(),
                )
                .await
                .unwrap();
        }
        assert_eq!(
            store.tags(&app, None, 10).await.unwrap().unwrap(),
            ["V1", "_x", "v10", "v2"]
        );
        assert_eq!(
            store.tags(&app, Some("_x"), 1).await.unwrap().unwrap(),
            ["v10"]
        );
        assert_eq!(store.tags(&name("none"), None, 10).await.unwrap(), None);
        let totals = store.totals().await.unwrap();
        assert_eq!(
            (
                totals.repositories,
                totals.manifests,
                totals.tags,
                totals.blobs
            ),
            (5, 4, 4, 5)
        );
        assert_eq!(totals.blob_bytes, 1 + 2 + 2 + 3 + 2);
        store.ping().await.unwrap();
    }

    async fn referrers_filter_and_page(store: &dyn MetadataStore) {
        let app = name("app");
        let subject = manifest("subject");
        store
            .put_manifest(&app, subject.clone(), None, 1, WriteRules::default())
            .await
            .unwrap();
        let mut referrers: Vec<NewManifest> = ["sig", "sbom-1", "sbom-2"]
            .iter()
            .map(|content| NewManifest {
                subject: Some(subject.digest.clone()),
                artifact_type: Some(format!("application/{}", &content[..3])),
                annotations: Some(format!(r#"{{"n":"{content}"}}"#)),
                ..manifest(content)
            })
            .collect();
        for referrer in &referrers {
            store
                .put_manifest(&app, referrer.clone(), None, 2, WriteRules::default())
                .await
                .unwrap();
        }
        referrers.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
        let all = store
            .referrers(&app, &subject.digest, None, None, 10)
            .await
            .unwrap();
        let digests =
            |list: &[ReferrerRecord]| list.iter().map(|r| r.digest.clone()).collect::<Vec<_>>();
        assert_eq!(
            digests(&all),
            referrers
                .iter()
                .map(|r| r.digest.clone())
                .collect::<Vec<_>>()
        );
        assert_eq!(all[0].annotations, referrers[0].annotations);
        let sboms = store
            .referrers(&app, &subject.digest, Some("application/sbo"), None, 10)
            .await
            .unwrap();
        assert_eq!(sboms.len(), 2);
        assert!(
            sboms
                .iter()
                .all(|r| r.artifact_type.as_deref() == Some("application/sbo"))
        );
        let page = store
            .referrers(&app, &subject.digest, None, Some(&all[0].digest), 1)
            .await
            .unwrap();
        assert_eq!(digests(&page), [all[1].digest.clone()]);
        assert!(
            store
                .referrers(&app, &referrers[0].digest, None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// One request writes to an upload at a time, whichever process it is
    /// on: a claim holds until released or lapsed, renewing it keeps the
    /// upload fresh, and an upload that is gone cannot be claimed.
    async fn an_upload_has_one_writer_at_a_time(store: &dyn MetadataStore) {
        store
            .create_upload("u", &name("app"), "", 10)
            .await
            .unwrap();
        assert!(store.claim_upload("u", "a/1", 20, 50).await.unwrap());
        assert!(!store.claim_upload("u", "b/1", 30, 60).await.unwrap());
        // Renewed by its holder: still its own past the first deadline.
        assert!(store.claim_upload("u", "a/1", 45, 75).await.unwrap());
        assert!(!store.claim_upload("u", "b/1", 60, 90).await.unwrap());
        assert!(store.stale_uploads(40, None, 10).await.unwrap().is_empty());
        // Not stale while claimed, however long ago it was last written.
        assert!(!store.delete_stale_upload("u", 100, 70).await.unwrap());
        // Released by another holder: nothing happens.
        store.release_upload("u", "b/1", 61).await.unwrap();
        assert!(!store.claim_upload("u", "b/1", 62, 90).await.unwrap());
        store.release_upload("u", "a/1", 63).await.unwrap();
        assert!(store.claim_upload("u", "b/1", 64, 90).await.unwrap());
        // A holder that vanished: its claim lapses, or a successor that
        // knows it is alone ends it.
        assert!(store.claim_upload("u", "c/1", 91, 120).await.unwrap());
        store.release_upload_claims().await.unwrap();
        assert!(store.claim_upload("u", "d/1", 91, 120).await.unwrap());
        assert!(
            store
                .claim_upload("u", "c/1", 91, 120)
                .await
                .is_ok_and(|claimed| !claimed)
        );
        assert_eq!(store.upload("u").await.unwrap().unwrap().updated_at, 91);
        store.delete_upload("u").await.unwrap();
        assert!(!store.claim_upload("u", "c/1", 92, 120).await.unwrap());
    }

    async fn uploads_expire_only_when_stale(store: &dyn MetadataStore) {
        let app = name("app");
        let layer = Digest::sha256_of(b"layer");
        store.link_blob(&app, &layer, 1, 1, None).await.unwrap();
        store.create_upload("u1", &app, "alice", 10).await.unwrap();
        store.create_upload("u2", &app, "", 20).await.unwrap();
        let u1 = store.upload("u1").await.unwrap().unwrap();
        assert_eq!(
            (u1.repository.as_str(), u1.owner.as_deref(), u1.updated_at),
            ("app", Some("alice"), 10)
        );
        assert_eq!(store.stale_uploads(15, None, 10).await.unwrap(), ["u1"]);
        assert!(store.claim_upload("u1", "p1/1", 30, 40).await.unwrap());
        assert_eq!(store.stale_uploads(25, None, 10).await.unwrap(), ["u2"]);
        assert_eq!(
            store.stale_uploads(100, Some("u1"), 10).await.unwrap(),
            ["u2"]
        );
        assert!(!store.delete_stale_upload("u1", 25, 35).await.unwrap());
        assert!(store.delete_stale_upload("u2", 25, 35).await.unwrap());
        assert_eq!(store.upload("u2").await.unwrap(), None);
        assert_eq!(
            store
                .delete_repository(&app, ImmutableTags::default())
                .await
                .unwrap(),
            Some(vec!["u1".to_owned()])
        );
        assert_eq!(store.upload("u1").await.unwrap(), None);
    }

    /// Writers in two processes (two stores on one database) racing for the
    /// last bytes of one quota: exactly as many writes fit as the quota
    /// allows, as if they had run one after another.
    async fn racing_writers_keep_one_quota(a: Arc<dyn MetadataStore>, b: Arc<dyn MetadataStore>) {
        let quota = Quota {
            repositories: RepositoryPattern::parse("team/**").unwrap(),
            limit: 10,
            excluded: vec![],
        };
        let writes: Vec<_> = (0..40u8)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let quota = quota.clone();
                tokio::spawn(async move {
                    let repository = name(&format!("team/r{}", i % 3));
                    store
                        .link_blob(&repository, &Digest::sha256_of(&[i]), 1, 1, Some(quota))
                        .await
                })
            })
            .collect();
        let mut linked = 0;
        for write in writes {
            match write.await.unwrap() {
                Ok(()) => linked += 1,
                Err(StorageError::QuotaExceeded { .. }) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(linked, 10);
        assert_eq!(a.usage(&quota).await.unwrap(), 10);
        assert_eq!(b.totals().await.unwrap().blobs, 10);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn racing_sqlite_writers_keep_one_quota() {
        let (dir, a) = open_sqlite();
        let b = SqliteMetadataStore::open(&dir.path().join("metadata.db")).unwrap();
        racing_writers_keep_one_quota(Arc::new(a), Arc::new(b)).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn racing_postgres_writers_keep_one_quota() {
        let url = berth_testkit::postgres().database();
        let (a, b) = tokio::join!(open_postgres(&url), open_postgres(&url));
        racing_writers_keep_one_quota(Arc::new(a), Arc::new(b)).await;
    }

    /// Two processes moving one tag at once, each also pushing the image:
    /// the tag ends on one of them, and both images stay whole.
    #[tokio::test(flavor = "multi_thread")]
    async fn racing_postgres_pushes_of_one_tag_end_consistent() {
        let url = berth_testkit::postgres().database();
        let (a, b) = tokio::join!(open_postgres(&url), open_postgres(&url));
        let (a, b): (Arc<dyn MetadataStore>, Arc<dyn MetadataStore>) = (Arc::new(a), Arc::new(b));
        let app = name("app");
        let tag = Tag::parse("latest").unwrap();
        let layer = Digest::sha256_of(b"layer");
        a.link_blob(&app, &layer, 5, 1, None).await.unwrap();
        let pushes: Vec<_> = (0..20)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let (app, tag, layer) = (app.clone(), tag.clone(), layer.clone());
                tokio::spawn(async move {
                    let image = image(&format!("image {i}"), &[&layer]);
                    store
                        .put_manifest(
                            &app,
                            image.clone(),
                            Some(&tag),
                            2 + i,
                            WriteRules::default(),
                        )
                        .await
                        .map(|()| image.digest)
                })
            })
            .collect();
        let mut pushed = Vec::new();
        for push in pushes {
            pushed.push(push.await.unwrap().unwrap());
        }
        let tagged = b.resolve_tag(&app, &tag).await.unwrap().unwrap();
        assert!(pushed.contains(&tagged.digest));
        for digest in &pushed {
            assert!(a.manifest(&app, digest).await.unwrap().is_some());
        }
        let usage = b.repository_usage(None, 10).await.unwrap();
        assert_eq!((usage[0].manifests, usage[0].tags), (20, 1));
        let sizes: usize = (0..20).map(|i| format!("image {i}").len()).sum();
        assert_eq!(usage[0].bytes, 5 + sizes as u64);
    }

    /// A tag another process moves is answered from this process's cache
    /// only until the database's notification of the move arrives.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_tag_another_postgres_process_moves_is_not_served_from_the_cache() {
        let url = berth_testkit::postgres().database();
        let (a, b) = tokio::join!(open_postgres(&url), open_postgres(&url));
        let app = name("app");
        let tag = Tag::parse("latest").unwrap();
        let (old, new) = (manifest("one"), manifest("two"));
        a.put_manifest(&app, old.clone(), Some(&tag), 1, WriteRules::default())
            .await
            .unwrap();
        let key = LookupKey {
            repository: "app".into(),
            reference: "latest".into(),
        };
        // Cached once a's listening connection is up.
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.lookups.get(&key).is_none() {
            assert!(Instant::now() < deadline, "a never caches the tag");
            a.resolve_tag(&app, &tag).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b.put_manifest(&app, new.clone(), Some(&tag), 2, WriteRules::default())
            .await
            .unwrap();
        loop {
            let answer = a.resolve_tag(&app, &tag).await.unwrap().unwrap();
            if answer.digest == new.digest {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a still answers {}",
                answer.digest
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// berth processes starting together on an empty database: one creates
    /// the schema, the others wait for it and find it done.
    #[tokio::test(flavor = "multi_thread")]
    async fn postgres_processes_starting_together_migrate_once() {
        let url = berth_testkit::postgres().database();
        let (a, b, c) = tokio::join!(
            open_postgres(&url),
            open_postgres(&url),
            open_postgres(&url)
        );
        for store in [&a, &b, &c] {
            store.ping().await.unwrap();
        }
        let version = berth_testkit::postgres().run(
            url.rsplit('/').next().unwrap(),
            "SELECT version FROM berth_schema",
        );
        assert_eq!(version.trim(), "3");
    }
}
