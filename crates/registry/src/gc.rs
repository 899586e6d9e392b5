//! Garbage collection, online: pushes, pulls and deletes go on while it runs,
//! in this process or any other berth sharing the store.
//!
//! A run reads one snapshot of the metadata and *plans* from it ([`plan`], a
//! pure function): tags that retention rules drop; manifests nothing kept
//! reaches (a tag, or a manifest pulled within a rule's window, through
//! index entries and referrers) once older than `untagged_after` (seven days
//! unless configured, never less than the grace period); links of a repository to blobs
//! no remaining manifest of it references; blobs no remaining link or
//! manifest needs. Then it *applies* the plan with conditional deletes that
//! check again, in the metadata store's own transactions, that each thing
//! is still unused and untouched since the cutoff (and, for tags and
//! manifests, not pulled within the grace period: a pull in progress keeps
//! its image). Every write that makes
//! something needed touches it, so whatever changed after the snapshot is
//! simply left for the next run: correctness comes from the store, not from
//! a lock. Bytes go last, through the blob store's stash protocol, which a
//! concurrent upload of the same content can always win.
//!
//! Bytes no metadata records (a crash between storing and recording them)
//! are found by listing the blob store and go after the grace period too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_oci::Digest;
use berth_storage::{
    BlobSnapshot, GcSnapshot, LinkSnapshot, ManifestSnapshot, RepositorySnapshot, Stashed,
    TagSnapshot, Timestamp,
};

use crate::error::{RegistryError, Result};
use crate::registry::{Registry, now};
use crate::rules::{CacheRule, StorageRules};

/// How a collection runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Only find out what would go.
    pub dry_run: bool,
    /// Nothing younger is collected; the configured grace period when `None`.
    pub grace: Option<Duration>,
}

/// The steps of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcPhase {
    Tags,
    Manifests,
    Links,
    Blobs,
    Orphans,
}

impl GcPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            GcPhase::Tags => "tags",
            GcPhase::Manifests => "manifests",
            GcPhase::Links => "links",
            GcPhase::Blobs => "blobs",
            GcPhase::Orphans => "orphans",
        }
    }
}

/// Where a run stands: `done` of `total` in `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcProgress {
    pub phase: GcPhase,
    pub done: u64,
    pub total: u64,
}

/// A tag of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRef {
    pub repository: String,
    pub tag: String,
}

/// A manifest of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRef {
    pub repository: String,
    pub digest: Digest,
    pub size: u64,
}

/// Stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

/// What a run deleted, or would have (`dry_run`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub tags: Vec<TagRef>,
    pub manifests: Vec<ManifestRef>,
    /// Links of repositories to blobs nothing there references.
    pub links: u64,
    /// Blobs whose bytes went.
    pub blobs: Vec<BlobRef>,
    /// Bytes no metadata recorded.
    pub orphans: Vec<BlobRef>,
}

impl GcReport {
    /// The bytes freed on the blob store.
    pub fn bytes(&self) -> u64 {
        self.blobs.iter().chain(&self.orphans).map(|b| b.size).sum()
    }
}

/// What a run found unused in one repository.
#[derive(Debug, Default, PartialEq, Eq)]
struct RepositoryPlan {
    name: String,
    tags: Vec<TagSnapshot>,
    manifests: Vec<ManifestSnapshot>,
    /// Manifests go only if untouched since this.
    manifest_cutoff: Timestamp,
    links: Vec<LinkSnapshot>,
}

/// What a run found unused.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    repositories: Vec<RepositoryPlan>,
    blobs: Vec<BlobSnapshot>,
}

fn millis(duration: Duration) -> Timestamp {
    Timestamp::try_from(duration.as_millis()).unwrap_or(Timestamp::MAX)
}

/// How old things must be before a collection takes them.
#[derive(Debug, Clone, Copy)]
struct Ages {
    /// Anything younger is left alone.
    grace: Duration,
    /// Untagged manifests nothing reaches go once this old, unless a
    /// retention rule says otherwise (never sooner than `grace`).
    untagged_after: Duration,
}

/// Decides, from one snapshot, what is unused as of `now`: see the module
/// documentation.
fn plan(snapshot: &GcSnapshot, rules: &StorageRules, now: Timestamp, ages: Ages) -> Plan {
    let cutoff = now.saturating_sub(millis(ages.grace));
    let mut planned: Vec<RepositoryPlan> = snapshot
        .repositories
        .iter()
        .map(|repository| plan_repository(repository, rules, now, ages))
        .collect();
    if let Some(cache) = &rules.cache {
        evict(snapshot, &mut planned, cache, cutoff);
    }
    let mut live: HashSet<&Digest> = HashSet::new();
    for (repository, planned) in snapshot.repositories.iter().zip(&mut planned) {
        let mut referenced: HashSet<&Digest> = HashSet::new();
        for manifest in remaining(repository, planned) {
            live.insert(&manifest.digest);
            referenced.extend(&manifest.references);
        }
        let (links, kept): (Vec<&LinkSnapshot>, Vec<&LinkSnapshot>) = repository
            .links
            .iter()
            .partition(|link| !referenced.contains(&link.digest) && link.linked_at < cutoff);
        live.extend(kept.iter().map(|link| &link.digest));
        planned.links = links.into_iter().cloned().collect();
        // A manifest that another going one lists goes after it: each
        // batch can then delete what it holds (an entry still listed stays).
        let listed: HashSet<Digest> = planned
            .manifests
            .iter()
            .flat_map(|m| &m.references)
            .cloned()
            .collect();
        planned
            .manifests
            .sort_by_key(|m| listed.contains(&m.digest));
    }
    let blobs = snapshot
        .blobs
        .iter()
        .filter(|blob| !live.contains(&blob.digest) && blob.touched_at < cutoff)
        .cloned()
        .collect();
    Plan {
        repositories: planned,
        blobs,
    }
}

/// The manifests of `repository` that stay when `plan` is carried out.
fn remaining<'a>(
    repository: &'a RepositorySnapshot,
    plan: &RepositoryPlan,
) -> Vec<&'a ManifestSnapshot> {
    let doomed: HashSet<&Digest> = plan.manifests.iter().map(|m| &m.digest).collect();
    repository
        .manifests
        .iter()
        .filter(|m| !doomed.contains(&m.digest))
        .collect()
}

/// Evicts from a pull-through cache's repositories the least recently
/// pulled manifests (with their tags) while what only they hold weighs more
/// than the cache's limit. Bytes a pushed repository also holds cost the
/// cache nothing and free nothing; nothing used within the grace period
/// goes (a pull in progress keeps its image).
fn evict(
    snapshot: &GcSnapshot,
    planned: &mut [RepositoryPlan],
    cache: &CacheRule,
    cutoff: Timestamp,
) {
    let mut pinned: HashSet<&Digest> = HashSet::new();
    let mut sizes: HashMap<&Digest, u64> = HashMap::new();
    // How many remaining cached manifests hold each digest (as themselves
    // or what they reference); loose links count once.
    let mut holders: HashMap<&Digest, usize> = HashMap::new();
    let mut candidates: Vec<(Timestamp, usize, &ManifestSnapshot)> = Vec::new();
    for (index, (repository, plan)) in snapshot.repositories.iter().zip(&*planned).enumerate() {
        let cached = cache.covers(&repository.name);
        let mut referenced: HashSet<&Digest> = HashSet::new();
        for manifest in remaining(repository, plan) {
            referenced.extend(&manifest.references);
            if !cached {
                pinned.insert(&manifest.digest);
                pinned.extend(&manifest.references);
                continue;
            }
            sizes.insert(&manifest.digest, manifest.size);
            for digest in std::iter::once(&manifest.digest).chain(&manifest.references) {
                *holders.entry(digest).or_default() += 1;
            }
            let used = manifest.pulled_at.unwrap_or(0).max(manifest.touched_at);
            if used < cutoff {
                candidates.push((used, index, manifest));
            }
        }
        for link in &repository.links {
            if !cached {
                pinned.insert(&link.digest);
                continue;
            }
            sizes.insert(&link.digest, link.size);
            // A link nothing references goes anyway once old enough.
            if !referenced.contains(&link.digest) && link.linked_at >= cutoff {
                *holders.entry(&link.digest).or_default() += 1;
            }
        }
    }
    let cost = |digest: &Digest| {
        if pinned.contains(digest) {
            0
        } else {
            sizes.get(digest).copied().unwrap_or(0)
        }
    };
    let mut held: u64 = holders.keys().map(|d| cost(d)).sum();
    if held <= cache.limit {
        return;
    }
    // An entry of a remaining index stays (the store refuses its delete):
    // it can go only once the index went, earlier in this pass (an index is
    // pulled before its entries) or in a later run.
    let mut listed: HashMap<(usize, &Digest), usize> = HashMap::new();
    for (index, (repository, plan)) in snapshot.repositories.iter().zip(&*planned).enumerate() {
        if cache.covers(&repository.name) {
            for manifest in remaining(repository, plan) {
                for reference in &manifest.references {
                    *listed.entry((index, reference)).or_default() += 1;
                }
            }
        }
    }
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.digest.cmp(&b.2.digest)));
    for (_, index, manifest) in candidates {
        if held <= cache.limit {
            break;
        }
        if listed
            .get(&(index, &manifest.digest))
            .is_some_and(|&n| n > 0)
        {
            continue;
        }
        for reference in &manifest.references {
            if let Some(count) = listed.get_mut(&(index, reference)) {
                *count -= 1;
            }
        }
        for digest in std::iter::once(&manifest.digest).chain(&manifest.references) {
            if let Some(count) = holders.get_mut(digest) {
                *count -= 1;
                if *count == 0 {
                    held -= cost(digest);
                }
            }
        }
        let repository = &snapshot.repositories[index];
        let plan = &mut planned[index];
        for tag in repository
            .tags
            .iter()
            .filter(|t| t.digest == manifest.digest)
        {
            if !plan.tags.contains(tag) {
                plan.tags.push(tag.clone());
            }
        }
        plan.manifests.push(manifest.clone());
        // Evicted manifests are younger than the untagged cutoff: checked
        // against the grace period's instead.
        plan.manifest_cutoff = plan.manifest_cutoff.max(cutoff);
    }
}

/// Tags retention drops, and manifests that nothing kept reaches (a
/// remaining tag, or a manifest pulled within the rule's window), parents
/// before what they list.
fn plan_repository(
    repository: &RepositorySnapshot,
    rules: &StorageRules,
    now: Timestamp,
    ages: Ages,
) -> RepositoryPlan {
    let rule = rules.retention(&repository.name);
    let immutable = rules.immutable(&repository.name);
    let by_digest: HashMap<&Digest, &ManifestSnapshot> = repository
        .manifests
        .iter()
        .map(|m| (&m.digest, m))
        .collect();
    let pulled_recently = |manifest: &ManifestSnapshot| {
        let window = rule.and_then(|r| r.keep_pulled_within);
        window.is_some_and(|w| {
            manifest
                .pulled_at
                .is_some_and(|at| at >= now.saturating_sub(millis(w)))
        })
    };
    let mut tags = Vec::new();
    if let Some((rule, keep)) = rule.and_then(|r| r.keep_tags.map(|k| (r, k))) {
        // Immutable tags are never deleted, so they take none of the slots.
        let mut counted: Vec<&TagSnapshot> = repository
            .tags
            .iter()
            .filter(|t| rule.counts(&t.name) && immutable.pattern_for(&t.name).is_none())
            .collect();
        counted.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.name.cmp(&b.name)));
        tags = counted
            .into_iter()
            .skip(keep)
            .filter(|t| !by_digest.get(&t.digest).is_some_and(|m| pulled_recently(m)))
            .cloned()
            .collect();
    }
    let dropped: HashSet<&str> = tags.iter().map(|t| t.name.as_str()).collect();

    // Reachable from the remaining tags, through index entries and from a
    // manifest to the referrers whose subject it is.
    let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for manifest in &repository.manifests {
        if let Some(subject) = &manifest.subject {
            referrers.entry(subject).or_default().push(&manifest.digest);
        }
    }
    let mut reachable: HashSet<&Digest> = HashSet::new();
    let mut pending: Vec<&Digest> = repository
        .tags
        .iter()
        .filter(|t| !dropped.contains(t.name.as_str()))
        .map(|t| &t.digest)
        .chain(
            repository
                .manifests
                .iter()
                .filter(|m| pulled_recently(m))
                .map(|m| &m.digest),
        )
        .collect();
    while let Some(digest) = pending.pop() {
        if !reachable.insert(digest) {
            continue;
        }
        if let Some(manifest) = by_digest.get(digest) {
            pending.extend(
                manifest
                    .references
                    .iter()
                    .filter(|r| by_digest.contains_key(r)),
            );
        }
        pending.extend(referrers.get(digest).into_iter().flatten().copied());
    }
    let untagged_after = rule
        .and_then(|r| r.untagged_after)
        .unwrap_or(ages.untagged_after);
    let manifest_cutoff = now.saturating_sub(millis(untagged_after.max(ages.grace)));
    let manifests: Vec<ManifestSnapshot> = repository
        .manifests
        .iter()
        .filter(|m| !reachable.contains(&m.digest))
        .filter(|m| m.touched_at < manifest_cutoff)
        .cloned()
        .collect();
    RepositoryPlan {
        name: repository.name.clone(),
        tags,
        manifests,
        manifest_cutoff,
        links: Vec::new(),
    }
}

/// How many deletes go into one metadata transaction: short enough that
/// pushes waiting for the write lock hardly notice.
const BATCH: usize = 500;
/// After each batch a run pauses this many times as long as the batch
/// took: collection is background work, and pushes and pulls come first.
const PAUSE_PER_WORK: f64 = 1.5;
/// How long a run may hold the collection lease before another berth may
/// take it.
const LEASE: Duration = Duration::from_secs(15 * 60);
const LEASE_NAME: &str = "gc";
/// A stash a remover is still settling is younger than this: its two steps
/// take milliseconds.
const STASH_SETTLED_WITHIN: Duration = Duration::from_secs(60);

/// A run's hold on the collection lease.
struct Lease {
    holder: String,
}

/// Lets requests have the machine for a while after `work` took its time.
async fn pause_after(work: std::time::Instant) {
    tokio::time::sleep(work.elapsed().mul_f64(PAUSE_PER_WORK)).await;
}

/// Reports progress through a phase.
struct Meter<'a> {
    progress: &'a (dyn Fn(GcProgress) + Send + Sync),
    phase: GcPhase,
    total: u64,
    done: u64,
}

impl<'a> Meter<'a> {
    fn start(
        progress: &'a (dyn Fn(GcProgress) + Send + Sync),
        phase: GcPhase,
        total: usize,
    ) -> Self {
        let meter = Meter {
            progress,
            phase,
            total: total as u64,
            done: 0,
        };
        meter.report();
        meter
    }

    fn advance(&mut self, by: usize) {
        self.done += by as u64;
        self.report();
    }

    fn report(&self) {
        (self.progress)(GcProgress {
            phase: self.phase,
            done: self.done,
            total: self.total,
        });
    }
}

impl Registry {
    /// Runs a collection (or, with `dry_run`, finds out what it would do).
    /// Fails with [`RegistryError::GcBusy`] while another one runs.
    pub async fn collect(
        &self,
        options: GcOptions,
        progress: &(dyn Fn(GcProgress) + Send + Sync),
    ) -> Result<GcReport> {
        let ages = Ages {
            grace: options.grace.unwrap_or(self.config.gc_grace),
            untagged_after: self.config.gc_untagged_after,
        };
        let started = now();
        if options.dry_run {
            return self.survey(started, ages, progress).await;
        }
        // A holder per run: a second run, in this process or another, finds
        // the lease taken.
        let lease = Lease {
            holder: format!("{}/{}", self.instance, uuid::Uuid::new_v4()),
        };
        if !self.renew(&lease).await? {
            return Err(RegistryError::GcBusy);
        }
        let report = self.sweep(started, ages, &lease, progress).await;
        if let Err(e) = self.metadata.release_lease(LEASE_NAME, &lease.holder).await {
            tracing::warn!(error = %e, "could not release the collection lease");
        }
        self.count_run(started, report.as_ref().ok());
        report
    }

    /// Counts a run (started at `started`) for metrics; `None` if it failed.
    fn count_run(&self, started: Timestamp, report: Option<&GcReport>) {
        let stats = &self.gc_stats;
        let ended = now();
        stats.runs.fetch_add(1, Ordering::Relaxed);
        stats.last_run.store(ended.max(0) as u64, Ordering::Relaxed);
        stats.last_duration.store(
            ended.saturating_sub(started).max(0) as u64,
            Ordering::Relaxed,
        );
        let Some(report) = report else {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        stats
            .freed_bytes
            .fetch_add(report.bytes(), Ordering::Relaxed);
        let manifests = report.manifests.len() as u64;
        stats
            .deleted_manifests
            .fetch_add(manifests, Ordering::Relaxed);
        let blobs = (report.blobs.len() + report.orphans.len()) as u64;
        stats.deleted_blobs.fetch_add(blobs, Ordering::Relaxed);
    }

    /// Takes or extends the collection lease; false if another run holds it.
    async fn renew(&self, lease: &Lease) -> Result<bool> {
        let at = now();
        Ok(self
            .metadata
            .take_lease(
                LEASE_NAME,
                &lease.holder,
                at,
                at.saturating_add(millis(LEASE)),
            )
            .await?)
    }

    /// Settles what removers that stopped between their two steps left
    /// stashed: bytes recorded again are restored, the rest purged. Stashes
    /// younger than [`STASH_SETTLED_WITHIN`] belong to a remover still at
    /// work and are left to it.
    pub async fn settle_abandoned_stashes(&self) -> Result<()> {
        let before = now().saturating_sub(millis(STASH_SETTLED_WITHIN));
        let abandoned = self.blobs.stashed().await?;
        let abandoned = abandoned.into_iter().filter(|s| s.at < before).collect();
        self.settle_stashes(abandoned).await?;
        Ok(())
    }

    /// What a collection at `started` would delete, deleting nothing.
    async fn survey(
        &self,
        started: Timestamp,
        ages: Ages,
        progress: &(dyn Fn(GcProgress) + Send + Sync),
    ) -> Result<GcReport> {
        let snapshot = self.metadata.gc_snapshot().await?;
        let plan = plan(&snapshot, &self.config.rules, started, ages);
        let mut report = GcReport {
            dry_run: true,
            ..GcReport::default()
        };
        for repository in &plan.repositories {
            report
                .tags
                .extend(repository.tags.iter().map(|t| tag_ref(&repository.name, t)));
            report.manifests.extend(
                repository
                    .manifests
                    .iter()
                    .map(|m| manifest_ref(&repository.name, m)),
            );
            report.links += repository.links.len() as u64;
        }
        report.blobs = plan.blobs.iter().map(blob_ref).collect();
        report.orphans = self
            .orphans(started.saturating_sub(millis(ages.grace)), progress)
            .await?;
        Ok(report)
    }

    async fn sweep(
        &self,
        started: Timestamp,
        ages: Ages,
        lease: &Lease,
        progress: &(dyn Fn(GcProgress) + Send + Sync),
    ) -> Result<GcReport> {
        let cutoff = started.saturating_sub(millis(ages.grace));
        let mut report = GcReport::default();
        self.settle_abandoned_stashes().await?;
        let snapshot = self.metadata.gc_snapshot().await?;
        let plan = plan(&snapshot, &self.config.rules, started, ages);

        let total = plan.repositories.iter().map(|r| r.tags.len()).sum();
        let mut meter = Meter::start(progress, GcPhase::Tags, total);
        for repository in &plan.repositories {
            for batch in repository.tags.chunks(BATCH) {
                let work = std::time::Instant::now();
                let deleted = self
                    .metadata
                    .delete_tags_if_unchanged(&repository.name, batch.to_vec(), cutoff)
                    .await?;
                report.tags.extend(deleted.into_iter().map(|tag| TagRef {
                    repository: repository.name.clone(),
                    tag,
                }));
                meter.advance(batch.len());
                pause_after(work).await;
            }
        }

        self.renew(lease).await?;
        let total = plan.repositories.iter().map(|r| r.manifests.len()).sum();
        let mut meter = Meter::start(progress, GcPhase::Manifests, total);
        for repository in &plan.repositories {
            // Planned parents first: an entry still listed by a manifest of
            // a later batch stays, for the next run.
            for batch in repository.manifests.chunks(BATCH) {
                let work = std::time::Instant::now();
                let digests = batch.iter().map(|m| m.digest.clone()).collect();
                let deleted = self
                    .metadata
                    .delete_manifests_if_untouched(
                        &repository.name,
                        digests,
                        repository.manifest_cutoff,
                        cutoff,
                    )
                    .await?;
                let deleted: HashSet<Digest> = deleted.into_iter().collect();
                for manifest in batch.iter().filter(|m| deleted.contains(&m.digest)) {
                    self.manifests.remove(&manifest.digest);
                    report
                        .manifests
                        .push(manifest_ref(&repository.name, manifest));
                }
                meter.advance(batch.len());
                pause_after(work).await;
            }
        }
        self.renew(lease).await?;

        let total = plan.repositories.iter().map(|r| r.links.len()).sum();
        let mut meter = Meter::start(progress, GcPhase::Links, total);
        for repository in &plan.repositories {
            for batch in repository.links.chunks(BATCH) {
                let work = std::time::Instant::now();
                let deleted = self
                    .metadata
                    .delete_links_if_unreferenced(&repository.name, batch.to_vec(), cutoff)
                    .await?;
                report.links += deleted.len() as u64;
                meter.advance(batch.len());
                pause_after(work).await;
            }
        }

        self.renew(lease).await?;
        let mut meter = Meter::start(progress, GcPhase::Blobs, plan.blobs.len());
        for batch in plan.blobs.chunks(BATCH) {
            let work = std::time::Instant::now();
            let digests = batch.iter().map(|b| b.digest.clone()).collect();
            let forgotten = self
                .metadata
                .forget_blobs_if_unused(digests, cutoff)
                .await?;
            self.remove_bytes(&forgotten).await?;
            let forgotten: HashSet<Digest> = forgotten.into_iter().collect();
            report.blobs.extend(
                batch
                    .iter()
                    .filter(|b| forgotten.contains(&b.digest))
                    .map(blob_ref),
            );
            meter.advance(batch.len());
            pause_after(work).await;
        }

        self.renew(lease).await?;
        if !self.config.sweep_unrecorded {
            return Ok(report);
        }
        let orphans = self.orphans(cutoff, progress).await?;
        for batch in orphans.chunks(BATCH) {
            let work = std::time::Instant::now();
            let digests: Vec<Digest> = batch.iter().map(|o| o.digest.clone()).collect();
            let removed: HashSet<Digest> = self.remove_bytes(&digests).await?.into_iter().collect();
            report.orphans.extend(
                batch
                    .iter()
                    .filter(|o| removed.contains(&o.digest))
                    .cloned(),
            );
            pause_after(work).await;
        }
        Ok(report)
    }

    /// Stored bytes no metadata records, last written before `cutoff`.
    async fn orphans(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(GcProgress) + Send + Sync),
    ) -> Result<Vec<BlobRef>> {
        let mut meter = Meter::start(progress, GcPhase::Orphans, 0);
        let mut orphans = Vec::new();
        let mut after: Option<Digest> = None;
        loop {
            let page = self.blobs.list(after.as_ref(), BATCH).await?;
            let Some(last) = page.last() else {
                return Ok(orphans);
            };
            after = Some(last.digest.clone());
            let recorded: HashSet<Digest> = self
                .metadata
                .recorded_blobs(page.iter().map(|b| b.digest.clone()).collect())
                .await?
                .into_iter()
                .collect();
            meter.total += page.len() as u64;
            orphans.extend(
                page.iter()
                    .filter(|b| b.modified < cutoff && !recorded.contains(&b.digest))
                    .map(|b| BlobRef {
                        digest: b.digest.clone(),
                        size: b.size,
                    }),
            );
            meter.advance(page.len());
        }
    }

    /// Removes the bytes of blobs the metadata no longer records, unless an
    /// upload records them again meanwhile; returns those that went.
    async fn remove_bytes(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let stashed = self.blobs.stash(digests).await?;
        self.settle_stashes(stashed).await
    }

    /// Removes the bytes of a refused push, unless something records them:
    /// they may be another repository's. A failure is left to collection.
    pub(crate) async fn discard_unrecorded(&self, digest: &Digest) {
        let removed = match self.metadata.blob_recorded(digest).await {
            Ok(true) => return,
            Ok(false) => self.remove_bytes(std::slice::from_ref(digest)).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = removed {
            tracing::warn!(%digest, error = %e, "could not remove the bytes of a refused push");
        }
    }

    /// Restores stashed bytes that something records now, and purges the
    /// rest; returns the digests purged.
    async fn settle_stashes(&self, stashed: Vec<Stashed>) -> Result<Vec<Digest>> {
        if stashed.is_empty() {
            return Ok(Vec::new());
        }
        let digests = stashed.iter().map(|s| s.digest.clone()).collect();
        let recorded: HashSet<Digest> = self
            .metadata
            .recorded_blobs(digests)
            .await?
            .into_iter()
            .collect();
        let (restore, purge): (Vec<Stashed>, Vec<Stashed>) = stashed
            .into_iter()
            .partition(|s| recorded.contains(&s.digest));
        self.blobs.restore(restore).await?;
        let purged = purge.iter().map(|s| s.digest.clone()).collect();
        self.blobs.purge(purge).await?;
        Ok(purged)
    }
}

fn tag_ref(repository: &str, tag: &TagSnapshot) -> TagRef {
    TagRef {
        repository: repository.to_owned(),
        tag: tag.name.clone(),
    }
}

fn manifest_ref(repository: &str, manifest: &ManifestSnapshot) -> ManifestRef {
    ManifestRef {
        repository: repository.to_owned(),
        digest: manifest.digest.clone(),
        size: manifest.size,
    }
}

fn blob_ref(blob: &BlobSnapshot) -> BlobRef {
    BlobRef {
        digest: blob.digest.clone(),
        size: blob.size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ImmutableRule, RetentionRule};
    use berth_oci::{RepositoryPattern, TagPattern};

    fn d(name: &str) -> Digest {
        Digest::sha256_of(name.as_bytes())
    }

    fn manifest(name: &str, touched_at: Timestamp, references: &[&str]) -> ManifestSnapshot {
        ManifestSnapshot {
            digest: d(name),
            size: 10,
            subject: None,
            references: references.iter().map(|r| d(r)).collect(),
            touched_at,
            pulled_at: None,
        }
    }

    fn tag(name: &str, target: &str, updated_at: Timestamp) -> TagSnapshot {
        TagSnapshot {
            name: name.into(),
            digest: d(target),
            updated_at,
        }
    }

    fn link(name: &str, linked_at: Timestamp) -> LinkSnapshot {
        LinkSnapshot {
            digest: d(name),
            size: 100,
            linked_at,
        }
    }

    fn blob(name: &str, touched_at: Timestamp) -> BlobSnapshot {
        BlobSnapshot {
            digest: d(name),
            size: 100,
            touched_at,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const NOW: Timestamp = 100_000_000;
    const OLD: Timestamp = NOW - 7_200_000;
    const NEW: Timestamp = NOW - 60_000;

    fn names(manifests: &[ManifestSnapshot]) -> HashSet<Digest> {
        manifests.iter().map(|m| m.digest.clone()).collect()
    }

    /// One repository: a tagged image, an index with two children and a
    /// signature of the index (untagged, reachable), an old untagged image,
    /// a new untagged image (in its grace period), and layers of each.
    fn snapshot() -> GcSnapshot {
        let mut signature = manifest("signature", OLD, &["sig-blob"]);
        signature.subject = Some(d("index"));
        let repository = RepositorySnapshot {
            name: "team/app".into(),
            manifests: vec![
                manifest("tagged", OLD, &["layer-a"]),
                manifest("index", OLD, &["child-1", "child-2"]),
                manifest("child-1", OLD, &["layer-b"]),
                manifest("child-2", OLD, &["layer-c"]),
                signature,
                manifest("old-untagged", OLD, &["layer-d", "layer-a"]),
                manifest("new-untagged", NEW, &["layer-e"]),
            ],
            tags: vec![tag("v1", "tagged", OLD), tag("multi", "index", OLD)],
            links: [
                "layer-a", "layer-b", "layer-c", "sig-blob", "layer-d", "layer-e",
            ]
            .into_iter()
            .map(|l| link(l, OLD))
            .chain([
                link("pushed-before-its-manifest", NEW),
                link("abandoned", OLD),
            ])
            .collect(),
        };
        let blobs = [
            "layer-a",
            "layer-b",
            "layer-c",
            "sig-blob",
            "layer-d",
            "layer-e",
            "pushed-before-its-manifest",
            "abandoned",
        ]
        .into_iter()
        .map(|b| blob(b, OLD))
        .chain(repository.manifests.iter().map(|m| BlobSnapshot {
            digest: m.digest.clone(),
            size: m.size,
            touched_at: m.touched_at,
        }))
        .chain([blob("deleted-long-ago", OLD), blob("deleted-just-now", NEW)])
        .collect();
        GcSnapshot {
            repositories: vec![repository],
            blobs,
        }
    }

    #[test]
    fn what_no_tag_reaches_goes_after_the_grace_period() {
        let ages = Ages {
            grace: HOUR,
            untagged_after: HOUR,
        };
        let plan = plan(&snapshot(), &StorageRules::default(), NOW, ages);
        let repository = &plan.repositories[0];
        assert!(repository.tags.is_empty());
        assert_eq!(
            names(&repository.manifests),
            HashSet::from([d("old-untagged")])
        );
        let links: HashSet<Digest> = repository.links.iter().map(|l| l.digest.clone()).collect();
        // layer-a is still used by the tagged image.
        assert_eq!(links, HashSet::from([d("layer-d"), d("abandoned")]));
        let blobs: HashSet<Digest> = plan.blobs.iter().map(|b| b.digest.clone()).collect();
        assert_eq!(
            blobs,
            HashSet::from([
                d("layer-d"),
                d("abandoned"),
                d("old-untagged"),
                d("deleted-long-ago")
            ])
        );
    }

    #[test]
    fn a_manifest_kept_for_its_pulls_keeps_its_referrers() {
        let mut pulled = manifest("pinned", OLD, &["layer-a"]);
        pulled.pulled_at = Some(NEW);
        let mut signature = manifest("signature", OLD, &["sig-blob"]);
        signature.subject = Some(d("pinned"));
        let snapshot = GcSnapshot {
            repositories: vec![RepositorySnapshot {
                name: "team/app".into(),
                manifests: vec![pulled, signature, manifest("forgotten", OLD, &[])],
                ..RepositorySnapshot::default()
            }],
            blobs: vec![],
        };
        let rules = StorageRules {
            retention: vec![RetentionRule {
                repositories: RepositoryPattern::parse("**").unwrap(),
                tags: vec![],
                keep_tags: None,
                untagged_after: Some(Duration::ZERO),
                keep_pulled_within: Some(HOUR),
            }],
            ..StorageRules::default()
        };
        let ages = Ages {
            grace: Duration::ZERO,
            untagged_after: HOUR,
        };
        let plan = plan(&snapshot, &rules, NOW, ages);
        assert_eq!(
            names(&plan.repositories[0].manifests),
            HashSet::from([d("forgotten")])
        );
    }

    #[test]
    fn retention_keeps_the_newest_tags_and_what_was_pulled() {
        let mut snapshot = snapshot();
        let repository = &mut snapshot.repositories[0];
        for (i, name) in ["old-untagged", "new-untagged"].into_iter().enumerate() {
            repository
                .tags
                .push(tag(&format!("build-{i}"), name, OLD + i as Timestamp));
        }
        repository.tags.push(tag("build-2", "tagged", OLD + 2));
        repository.manifests[5].pulled_at = Some(NEW);
        let rules = StorageRules {
            retention: vec![RetentionRule {
                repositories: RepositoryPattern::parse("team/**").unwrap(),
                tags: vec![TagPattern::parse("build-*").unwrap()],
                keep_tags: Some(1),
                untagged_after: Some(Duration::from_secs(30)),
                keep_pulled_within: Some(HOUR),
            }],
            ..StorageRules::default()
        };
        let ages = Ages {
            grace: Duration::ZERO,
            untagged_after: Duration::from_secs(7 * 24 * 3600),
        };
        let plan = plan(&snapshot, &rules, NOW, ages);
        let tags: Vec<&str> = plan.repositories[0]
            .tags
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        // build-2 is the newest; build-0's manifest was pulled within the hour.
        assert_eq!(tags, ["build-1"]);
        // Untagged now, and older than untagged_after: new-untagged goes.
        assert_eq!(
            names(&plan.repositories[0].manifests),
            HashSet::from([d("new-untagged")])
        );

        // Immutable tags are never counted out.
        let rules = StorageRules {
            immutable: vec![ImmutableRule {
                repositories: RepositoryPattern::parse("**").unwrap(),
                tags: vec![TagPattern::parse("build-1").unwrap()],
            }],
            ..rules
        };
        let plan = super::plan(&snapshot, &rules, NOW, ages);
        assert!(plan.repositories[0].tags.is_empty());
    }

    /// A cache of three images (100-byte layers, 10-byte manifests) pulled
    /// at different times, sharing one layer with a pushed repository.
    fn cache_snapshot() -> GcSnapshot {
        let pulled = |name: &str, at: Timestamp, layers: &[&str]| ManifestSnapshot {
            pulled_at: Some(at),
            ..manifest(name, OLD - 1_000, layers)
        };
        let cached = RepositorySnapshot {
            name: "hub/library/app".into(),
            manifests: vec![
                pulled("first", OLD, &["layer-1", "shared"]),
                pulled("second", OLD + 10, &["layer-2"]),
                pulled("recent", NEW, &["layer-3"]),
            ],
            tags: vec![
                tag("a", "first", OLD),
                tag("b", "second", OLD),
                tag("c", "recent", OLD),
            ],
            links: ["layer-1", "layer-2", "layer-3", "shared"]
                .into_iter()
                .map(|l| link(l, OLD))
                .collect(),
        };
        let pushed = RepositorySnapshot {
            name: "team/app".into(),
            manifests: vec![manifest("pushed", OLD - 5_000, &["shared"])],
            tags: vec![tag("v1", "pushed", OLD)],
            links: vec![link("shared", OLD)],
        };
        GcSnapshot {
            repositories: vec![cached, pushed],
            blobs: Vec::new(),
        }
    }

    #[test]
    fn a_full_cache_evicts_the_least_recently_pulled() {
        let ages = Ages {
            grace: HOUR,
            untagged_after: 7 * 24 * HOUR,
        };
        let rules = |limit| StorageRules {
            cache: Some(CacheRule {
                repositories: vec![RepositoryPattern::parse("hub/**").unwrap()],
                limit,
            }),
            ..StorageRules::default()
        };
        // Three layers and three manifests: 330 bytes; the shared layer
        // costs the cache nothing.
        let plan_with = |limit| plan(&cache_snapshot(), &rules(limit), NOW, ages);
        assert!(plan_with(330).repositories[0].manifests.is_empty());
        let plan = plan_with(300);
        let cached = &plan.repositories[0];
        assert_eq!(names(&cached.manifests), HashSet::from([d("first")]));
        assert_eq!(cached.tags, vec![tag("a", "first", OLD)]);
        let links: HashSet<Digest> = cached.links.iter().map(|l| l.digest.clone()).collect();
        assert_eq!(links, HashSet::from([d("layer-1"), d("shared")]));
        // The pushed repository keeps everything, its shared layer included.
        assert_eq!(
            plan.repositories[1],
            RepositoryPlan {
                name: "team/app".into(),
                manifest_cutoff: plan.repositories[1].manifest_cutoff,
                ..RepositoryPlan::default()
            }
        );
        // Even with no room at all, what was pulled within the grace
        // period stays.
        let plan = plan_with(0);
        assert_eq!(
            names(&plan.repositories[0].manifests),
            HashSet::from([d("first"), d("second")])
        );
    }

    #[test]
    fn eviction_takes_an_index_entry_only_with_its_index() {
        let pulled = |name: &str, at: Timestamp, references: &[&str]| ManifestSnapshot {
            pulled_at: Some(at),
            ..manifest(name, OLD - 1_000, references)
        };
        let snapshot = |index_pulled: Timestamp| GcSnapshot {
            repositories: vec![RepositorySnapshot {
                name: "hub/library/multi".into(),
                manifests: vec![
                    pulled("index", index_pulled, &["child"]),
                    pulled("child", OLD, &["layer"]),
                ],
                tags: vec![tag("1", "index", OLD)],
                links: vec![link("layer", OLD)],
            }],
            blobs: Vec::new(),
        };
        let rules = StorageRules {
            cache: Some(CacheRule {
                repositories: vec![RepositoryPattern::parse("hub/**").unwrap()],
                limit: 0,
            }),
            ..StorageRules::default()
        };
        let ages = Ages {
            grace: HOUR,
            untagged_after: 7 * 24 * HOUR,
        };
        // The index, pulled first, goes, and its entry with it.
        let plan = plan(&snapshot(OLD - 10), &rules, NOW, ages);
        assert_eq!(
            names(&plan.repositories[0].manifests),
            HashSet::from([d("index"), d("child")])
        );
        // An index in use keeps its entry, however old.
        let plan = super::plan(&snapshot(NEW), &rules, NOW, ages);
        assert!(plan.repositories[0].manifests.is_empty());
    }
}
