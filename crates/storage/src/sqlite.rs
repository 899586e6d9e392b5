//! The embedded metadata store, on SQLite.
//!
//! SQLite in WAL mode gives atomic, durable transactions in one file with no
//! server to run, which is what a single-binary registry wants by default. The
//! SQL avoids SQLite-only syntax (`ON CONFLICT … DO NOTHING` rather than
//! `INSERT OR IGNORE`) so a PostgreSQL store can share it. Byte order of names
//! is SQLite's default (BINARY) collation; PostgreSQL would need `COLLATE "C"`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Digest, RepositoryName, Tag};
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use r2d2_sqlite::rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::DatabaseErrorKind;
use crate::lookup_cache::{LookupCache, LookupKey};
use crate::metadata::*;
use crate::{StorageError, StorageResult};

/// The schema, as the migrations that build it in order: `PRAGMA
/// user_version` holds how many were applied. Append to change it; never
/// edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE repositories (
        id   INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size   INTEGER NOT NULL
    );
    -- Which repository may read which blob: uploaded or mounted there.
    CREATE TABLE repository_blobs (
        repository_id INTEGER NOT NULL REFERENCES repositories(id),
        digest        TEXT NOT NULL REFERENCES blobs(digest),
        PRIMARY KEY (repository_id, digest)
    );
    CREATE INDEX repository_blobs_digest ON repository_blobs(digest);
    CREATE TABLE manifests (
        repository_id INTEGER NOT NULL REFERENCES repositories(id),
        digest        TEXT NOT NULL REFERENCES blobs(digest),
        media_type    TEXT NOT NULL,
        size          INTEGER NOT NULL,
        artifact_type TEXT,
        subject       TEXT,
        annotations   TEXT,
        PRIMARY KEY (repository_id, digest)
    );
    CREATE INDEX manifests_subject ON manifests(repository_id, subject);
    CREATE INDEX manifests_digest ON manifests(digest);
    -- Blobs and child manifests each manifest needs.
    CREATE TABLE manifest_references (
        repository_id   INTEGER NOT NULL,
        manifest_digest TEXT NOT NULL,
        child_digest    TEXT NOT NULL,
        PRIMARY KEY (repository_id, manifest_digest, child_digest),
        FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest)
    );
    CREATE INDEX manifest_references_child ON manifest_references(child_digest);
    CREATE TABLE tags (
        repository_id INTEGER NOT NULL,
        name          TEXT NOT NULL,
        digest        TEXT NOT NULL,
        PRIMARY KEY (repository_id, name),
        FOREIGN KEY (repository_id, digest) REFERENCES manifests(repository_id, digest)
    );
    CREATE TABLE uploads (
        id         TEXT PRIMARY KEY,
        repository TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX uploads_updated_at ON uploads(updated_at);
    ",
    // 2: an upload session belongs to the subject that opened it (NULL for
    // sessions opened before: any subject with push rights, as then).
    "ALTER TABLE uploads ADD COLUMN owner TEXT;",
];

/// Connections kept open; readers run in parallel in WAL mode.
const POOL_SIZE: u32 = 8;

/// Manifest lookups (tag or digest → manifest) kept in memory.
const LOOKUP_CACHE_ENTRIES: usize = 100_000;

pub struct SqliteMetadataStore {
    pool: Pool<SqliteConnectionManager>,
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

fn configure(conn: &mut Connection) -> Result<(), r2d2_sqlite::rusqlite::Error> {
    conn.busy_timeout(Duration::from_secs(10))?;
    // FULL: a transaction reported committed survives a power cut, not just a crash.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
}

impl SqliteMetadataStore {
    /// Opens (creating or migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> StorageResult<Self> {
        let manager = SqliteConnectionManager::file(path).with_init(configure);
        let pool = Pool::builder().max_size(POOL_SIZE).build(manager)?;
        let mut conn = pool.get()?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        migrate(&mut conn, path)?;
        Ok(SqliteMetadataStore {
            pool,
            lookups: Arc::new(LookupCache::new(LOOKUP_CACHE_ENTRIES)),
        })
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
            .with_conn(move |conn| {
                conn.prepare_cached(sql)?
                    .query_row([&repository, &reference], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?
                    .map(|(d, m, s)| manifest_record(d, m, s))
                    .transpose()
            })
            .await?;
        if let Some(record) = &found {
            self.lookups.insert(seen, key, record.clone());
        }
        Ok(found)
    }

    /// Runs `f` on a pooled connection on a blocking thread.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || f(&mut *pool.get()?))
            .await
            .map_err(|e| StorageError::database(DatabaseErrorKind::Other, e))?
    }

    /// Runs `f` in an immediate (write-locking) transaction and commits it.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.with_conn(move |conn| transact(conn, f)).await
    }

    /// [`Self::write`] for manifests and tags: then, committed or not, forgets
    /// the `stale` lookups. That happens on the blocking thread with the
    /// write itself, so it is done even when the request that asked for the
    /// write is dropped meanwhile (a client that disconnects), which would
    /// otherwise leave a moved tag answered from the cache.
    async fn write_manifests<T: Send + 'static>(
        &self,
        stale: Stale,
        f: impl FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let lookups = self.lookups.clone();
        self.with_conn(move |conn| {
            let outcome = transact(conn, f);
            match stale {
                Stale::Keys(keys) => lookups.invalidate(keys),
                Stale::Repository(name) => lookups.invalidate_repository(&name),
            }
            outcome
        })
        .await
    }
}

/// Brings the schema up to date, one transaction per migration, so a crash
/// leaves it at some version this code can continue from.
fn migrate(conn: &mut Connection, path: &Path) -> StorageResult<()> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StorageError::database(
            DatabaseErrorKind::Schema,
            format!(
                "{} has schema version {applied}, newer than this berth understands ({}): \
                 run a newer berth",
                path.display(),
                MIGRATIONS.len()
            ),
        ));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// `f` in an immediate (write-locking) transaction, committed.
fn transact<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> StorageResult<T>,
) -> StorageResult<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

fn repository_id(conn: &Connection, name: &str) -> StorageResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

fn ensure_repository(conn: &Connection, name: &str) -> StorageResult<i64> {
    conn.prepare_cached(
        "INSERT INTO repositories (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
    )?
    .execute([name])?;
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

/// Deletes the `blobs` row of `digest` if nothing refers to it any more.
fn drop_blob_if_orphaned(conn: &Connection, digest: &str) -> StorageResult<bool> {
    let removed = conn
        .prepare_cached(
            "DELETE FROM blobs WHERE digest = ?1
               AND NOT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = ?1)
               AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = ?1)
               AND NOT EXISTS (SELECT 1 FROM manifest_references WHERE child_digest = ?1)",
        )?
        .execute([digest])?;
    Ok(removed == 1)
}

fn manifest_record(digest: String, media_type: String, size: i64) -> StorageResult<ManifestRecord> {
    Ok(ManifestRecord {
        digest: parse_digest(digest)?,
        media_type,
        size: to_size(size),
    })
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    async fn ping(&self) -> StorageResult<()> {
        self.with_conn(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn blob_in_repository(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.with_conn(move |conn| {
            let size: Option<i64> = conn
                .prepare_cached(
                    "SELECT b.size FROM repository_blobs rb
                       JOIN repositories r ON r.id = rb.repository_id
                       JOIN blobs b ON b.digest = rb.digest
                      WHERE r.name = ?1 AND rb.digest = ?2",
                )?
                .query_row([&repository, &digest], |r| r.get(0))
                .optional()?;
            Ok(size.map(to_size))
        })
        .await
    }

    async fn link_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> StorageResult<()> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.write(move |tx| {
            let id = ensure_repository(tx, &repository)?;
            tx.prepare_cached(
                "INSERT INTO blobs (digest, size) VALUES (?1, ?2) ON CONFLICT (digest) DO NOTHING",
            )?
            .execute(params![digest, size as i64])?;
            tx.prepare_cached(
                "INSERT INTO repository_blobs (repository_id, digest) VALUES (?1, ?2)
                 ON CONFLICT (repository_id, digest) DO NOTHING",
            )?
            .execute(params![id, digest])?;
            Ok(())
        })
        .await
    }

    async fn mount_blob(
        &self,
        from: &RepositoryName,
        to: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>> {
        let (from, to, digest) = (from.to_string(), to.to_string(), digest.to_string());
        self.write(move |tx| {
            let size: Option<i64> = tx
                .prepare_cached(
                    "SELECT b.size FROM repository_blobs rb
                       JOIN repositories r ON r.id = rb.repository_id
                       JOIN blobs b ON b.digest = rb.digest
                      WHERE r.name = ?1 AND rb.digest = ?2",
                )?
                .query_row([&from, &digest], |r| r.get(0))
                .optional()?;
            let Some(size) = size else { return Ok(None) };
            let id = ensure_repository(tx, &to)?;
            tx.prepare_cached(
                "INSERT INTO repository_blobs (repository_id, digest) VALUES (?1, ?2)
                 ON CONFLICT (repository_id, digest) DO NOTHING",
            )?
            .execute(params![id, digest])?;
            Ok(Some(to_size(size)))
        })
        .await
    }

    async fn unlink_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<BlobUnlink> {
        let (repository, digest) = (repository.to_string(), digest.to_string());
        self.write(move |tx| {
            let Some(id) = repository_id(tx, &repository)? else {
                return Ok(BlobUnlink {
                    was_linked: false,
                    orphaned: false,
                });
            };
            let was_linked = tx
                .prepare_cached(
                    "DELETE FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2",
                )?
                .execute(params![id, digest])?
                == 1;
            let orphaned = was_linked && drop_blob_if_orphaned(tx, &digest)?;
            Ok(BlobUnlink {
                was_linked,
                orphaned,
            })
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
              WHERE r.name = ?1 AND t.name = ?2",
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
              WHERE r.name = ?1 AND m.digest = ?2",
        )
        .await
    }

    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: NewManifest,
        tag: Option<&Tag>,
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
            let mut blob_known = tx.prepare_cached(
                "SELECT 1 FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2",
            )?;
            for blob in &manifest.blobs {
                if !blob_known.exists(params![id, blob.as_str()])? {
                    return Err(StorageError::MissingReferences(blob.clone()));
                }
            }
            let mut manifest_known = tx.prepare_cached(
                "SELECT 1 FROM manifests WHERE repository_id = ?1 AND digest = ?2",
            )?;
            // An index entry may also name a plain blob of the repository:
            // BuildKit's registry cache lists its layers and cache config
            // there, and Distribution accepts that.
            for child in &manifest.children {
                if !manifest_known.exists(params![id, child.as_str()])?
                    && !blob_known.exists(params![id, child.as_str()])?
                {
                    return Err(StorageError::MissingReferences(child.clone()));
                }
            }
            let digest = manifest.digest.as_str();
            tx.prepare_cached(
                "INSERT INTO blobs (digest, size) VALUES (?1, ?2) ON CONFLICT (digest) DO NOTHING",
            )?
            .execute(params![digest, manifest.size as i64])?;
            tx.prepare_cached(
                "INSERT INTO manifests
                    (repository_id, digest, media_type, size, artifact_type, subject, annotations)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (repository_id, digest) DO NOTHING",
            )?
            .execute(params![
                id,
                digest,
                manifest.media_type,
                manifest.size as i64,
                manifest.artifact_type,
                manifest.subject.as_ref().map(Digest::as_str),
                manifest.annotations,
            ])?;
            let mut reference = tx.prepare_cached(
                "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?;
            for child in manifest.blobs.iter().chain(&manifest.children) {
                reference.execute(params![id, digest, child.as_str()])?;
            }
            if let Some(tag) = tag {
                tx.prepare_cached(
                    "INSERT INTO tags (repository_id, name, digest) VALUES (?1, ?2, ?3)
                     ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest",
                )?
                .execute(params![id, tag, digest])?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<ManifestDeletion> {
        let (name, digest) = (repository.to_string(), digest.to_string());
        // The tags that pointed at it go too: forget the repository's lookups.
        self.write_manifests(Stale::Repository(name.clone()), move |tx| {
            let repository = name;
            let Some(id) = repository_id(tx, &repository)? else {
                return Ok(ManifestDeletion {
                    found: false,
                    orphaned: false,
                });
            };
            tx.prepare_cached("DELETE FROM tags WHERE repository_id = ?1 AND digest = ?2")?
                .execute(params![id, digest])?;
            tx.prepare_cached(
                "DELETE FROM manifest_references WHERE repository_id = ?1 AND manifest_digest = ?2",
            )?
            .execute(params![id, digest])?;
            let found = tx
                .prepare_cached("DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2")?
                .execute(params![id, digest])?
                == 1;
            let orphaned = found && drop_blob_if_orphaned(tx, &digest)?;
            Ok(ManifestDeletion { found, orphaned })
        })
        .await
    }

    async fn delete_tag(&self, repository: &RepositoryName, tag: &Tag) -> StorageResult<bool> {
        let key = LookupKey {
            repository: repository.to_string(),
            reference: tag.to_string(),
        };
        let (repository, tag) = (key.repository.clone(), key.reference.clone());
        self.write_manifests(Stale::Keys(vec![key]), move |tx| {
            let Some(id) = repository_id(tx, &repository)? else {
                return Ok(false);
            };
            let n = tx
                .prepare_cached("DELETE FROM tags WHERE repository_id = ?1 AND name = ?2")?
                .execute(params![id, tag])?;
            Ok(n == 1)
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
        self.with_conn(move |conn| {
            let Some(id) = repository_id(conn, &repository)? else {
                return Ok(None);
            };
            let tags = conn
                .prepare_cached(
                    "SELECT name FROM tags WHERE repository_id = ?1 AND name > ?2
                      ORDER BY name LIMIT ?3",
                )?
                .query_map(params![id, after, limit as i64], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(Some(tags))
        })
        .await
    }

    async fn repositories(&self, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        let after = after.unwrap_or("").to_owned();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2",
                )?
                .query_map(params![after, limit as i64], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
        .await
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
                       FROM manifests m JOIN repositories r ON r.id = m.repository_id
                      WHERE r.name = ?1 AND m.subject = ?2
                        AND (?3 IS NULL OR m.artifact_type = ?3)
                        AND (?4 IS NULL OR m.digest > ?4)
                      ORDER BY m.digest
                      LIMIT ?5",
                )?
                .query_map(
                    params![repository, subject, artifact_type, after, limit],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )?
                .collect::<Result<Vec<(String, String, i64, Option<String>, Option<String>)>, _>>(
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
        now: i64,
    ) -> StorageResult<()> {
        let (id, repository, owner) = (id.to_owned(), repository.to_string(), owner.to_owned());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO uploads (id, repository, owner, updated_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, repository, owner, now])?;
            Ok(())
        })
        .await
    }

    async fn upload(&self, id: &str) -> StorageResult<Option<UploadRecord>> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, repository, owner, updated_at FROM uploads WHERE id = ?1",
                )?
                .query_row([id], |r| {
                    Ok(UploadRecord {
                        id: r.get(0)?,
                        repository: r.get(1)?,
                        owner: r.get(2)?,
                        updated_at: r.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn touch_upload(&self, id: &str, now: i64) -> StorageResult<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.prepare_cached("UPDATE uploads SET updated_at = ?2 WHERE id = ?1")?
                .execute(params![id, now])?;
            Ok(())
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> StorageResult<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?
                .execute([id])?;
            Ok(())
        })
        .await
    }

    async fn stale_uploads(
        &self,
        before: i64,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>> {
        let after = after.map(str::to_owned);
        self.with_conn(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id FROM uploads WHERE updated_at < ?1 AND (?2 IS NULL OR id > ?2)
                      ORDER BY id LIMIT ?3",
                )?
                .query_map(params![before, after, limit as i64], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    async fn delete_stale_upload(&self, id: &str, before: i64) -> StorageResult<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            let deleted = tx
                .prepare_cached("DELETE FROM uploads WHERE id = ?1 AND updated_at < ?2")?
                .execute(params![id, before])?;
            Ok(deleted == 1)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    use super::*;

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
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetadataStore::open(&dir.path().join("metadata.db")).unwrap();
        let repository = RepositoryName::parse("app").unwrap();
        let tag = Tag::parse("latest").unwrap();
        let (old, new) = (manifest("one"), manifest("two"));
        store
            .put_manifest(&repository, old.clone(), Some(&tag))
            .await
            .unwrap();
        let cached = store.resolve_tag(&repository, &tag).await.unwrap().unwrap();
        assert_eq!(cached.digest, old.digest);

        // Polled once (the write starts on its blocking thread), then dropped.
        {
            let mut push = pin!(store.put_manifest(&repository, new.clone(), Some(&tag)));
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
}
