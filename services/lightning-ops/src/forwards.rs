//! Forwarding-history ingestion: copies the node's forwarding log into `ops_forwards`, gaplessly
//! and exactly once.
//!
//! The cursor (`ops_cursors.forwards`, the next index to ask for) advances in the same
//! transaction as the events it covers, with a guarded update (`WHERE next_offset = <read
//! value>`), and each event's node index is its primary key. So after a crash or restart
//! ingestion resumes where the last committed page ended: no gap, nothing counted twice. A page
//! whose indices are not consecutive from the cursor is refused (`FORWARDING_GAP`) and nothing of
//! it is stored.

use crate::{error::OpsError, ops::Ops, store};

/// Largest page the executor serves (`MAX_FORWARDS_PAGE` there).
pub const MAX_PAGE: u32 = 1_000;
/// Default page: large enough to catch up quickly, small enough for one short transaction.
pub const DEFAULT_PAGE: u32 = 500;
/// Pages one ingestion run reads at most (500,000 events with the default page), so a report or
/// a reconcile tick never waits unboundedly on a long backlog; the next run continues.
pub const MAX_PAGES_PER_RUN: u32 = 1_000;

/// What one ingestion run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    pub pages: u32,
    pub events: u64,
    /// The cursor after the run: the next index to ask for.
    pub cursor: u64,
}

impl Ops {
    /// Reads the forwarding log from the stored cursor on, at most `max_pages` pages (at most
    /// [`MAX_PAGES_PER_RUN`]), committing page by page.
    pub async fn ingest(&self, max_pages: u32) -> Result<Ingested, OpsError> {
        let channels = self.channels()?.clone();
        let _one_at_a_time = self.ingest_lock.lock().await;
        let page_size = self.settings.forwards_page.clamp(1, MAX_PAGE);
        let mut done = Ingested::default();
        let max_pages = max_pages.min(MAX_PAGES_PER_RUN);
        loop {
            let cursor = store::cursor(&mut *self.conn().await?, store::FORWARDS_CURSOR).await?;
            done.cursor = cursor;
            if done.pages >= max_pages {
                break;
            }
            let page = channels
                .forwarding_history(cursor, page_size)
                .await
                .map_err(OpsError::Executor)?;
            if page.events.is_empty() {
                break;
            }
            for (n, e) in (0u64..).zip(&page.events) {
                if Some(e.index) != cursor.checked_add(n) {
                    return Err(OpsError::ForwardingGap(format!(
                        "asked from index {cursor}, event {n} of the page has index {}",
                        e.index
                    )));
                }
            }
            let count = u64::try_from(page.events.len()).unwrap_or(u64::MAX);
            let next = cursor
                .checked_add(count)
                .ok_or_else(|| OpsError::ForwardingGap("index overflow".into()))?;
            if page.last_offset_index != next {
                return Err(OpsError::ForwardingGap(format!(
                    "{count} events from index {cursor}, but the next offset is {}",
                    page.last_offset_index
                )));
            }
            let now = self.clock.now_ms();
            let mut tx = self.db.begin().await?;
            if !store::advance_cursor(&mut tx, store::FORWARDS_CURSOR, cursor, next, now).await? {
                // Another ingester stored this page first; read the cursor again.
                tx.rollback().await?;
                continue;
            }
            for e in &page.events {
                store::insert_forward(&mut tx, e, now).await?;
            }
            tx.commit().await?;
            done.pages += 1;
            done.events += count;
            done.cursor = next;
            if count < u64::from(page_size) {
                break;
            }
        }
        Ok(done)
    }
}
