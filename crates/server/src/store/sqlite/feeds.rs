//! The SQLite store's feeds (`store/feeds.rs`): a post and a read mark as
//! statements on the writer's transaction, and the read of a feed.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::super::columns::{FEED_ITEM_COLUMNS, feed_item, last_seq, seq};
use super::super::feeds::{FeedItem, FeedPage, NewItem, Once, Retention, keys_not_before};
use super::super::{Applied, Feed, StoreError};
use super::all;
use petchat_protocol::{LastSeq, Seq, Timestamp};

/// `Write::Post`.
pub(super) fn post(
    tx: &Transaction<'_>,
    feed: &Feed,
    item: &NewItem,
    once: Option<&Once>,
    retention: Retention,
) -> Result<Applied, StoreError> {
    let key = feed.key();
    if let Some(once) = once {
        tx.prepare_cached("DELETE FROM feed_keys WHERE feed = ? AND at < ?")?
            .execute(params![key, keys_not_before(item.at)])?;
        let known: Option<(String, i64, String)> = tx
            .prepare_cached("SELECT digest, seq, item_id FROM feed_keys WHERE feed = ? AND key = ?")?
            .query_row(params![key, once.key.as_str()], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .optional()?;
        if let Some((digest, first, id)) = known {
            return Ok(if digest == once.digest {
                Applied::PostedBefore { seq: seq(first)?, id }
            } else {
                Applied::KeyConflict
            });
        }
    }
    let (next, read): (i64, i64) = tx
        .prepare_cached(
            "INSERT INTO feeds (feed, last_seq) VALUES (?, 1) \
             ON CONFLICT (feed) DO UPDATE SET last_seq = feeds.last_seq + 1 RETURNING last_seq, read_seq",
        )?
        .query_row([&key], |row| Ok((row.get(0)?, row.get(1)?)))?;
    tx.prepare_cached("INSERT INTO feed_items (feed, seq, id, name, body, at) VALUES (?, ?, ?, ?, ?, ?)")?
        .execute(params![key, next, item.id, item.name.as_str(), item.body, item.at.as_unix_ms()])?;
    let drop_up_to = retention.drop_up_to(next.max(0) as u64, read.max(0) as u64);
    if drop_up_to > 0 {
        tx.prepare_cached("DELETE FROM feed_items WHERE feed = ? AND seq <= ?")?
            .execute(params![key, drop_up_to as i64])?;
    }
    if let Some(not_before) = retention.not_before(item.at) {
        tx.prepare_cached("DELETE FROM feed_items WHERE feed = ? AND at < ?")?.execute(params![key, not_before])?;
    }
    if let Some(once) = once {
        tx.prepare_cached("INSERT INTO feed_keys (feed, key, digest, seq, item_id, at) VALUES (?, ?, ?, ?, ?, ?)")?
            .execute(params![key, once.key.as_str(), once.digest, next, item.id, item.at.as_unix_ms()])?;
    }
    Ok(Applied::Posted(FeedItem {
        seq: seq(next)?,
        id: item.id.clone(),
        name: item.name.clone(),
        body: item.body.clone(),
        at: item.at,
    }))
}

/// `Write::MarkRead`.
pub(super) fn mark_read(tx: &Transaction<'_>, feed: &Feed, up_to: Seq) -> Result<Applied, StoreError> {
    let key = feed.key();
    let moved: Option<i64> = tx
        .prepare_cached(
            "UPDATE feeds SET read_seq = MIN(?1, last_seq) WHERE feed = ?2 AND read_seq < MIN(?1, last_seq) \
             RETURNING read_seq",
        )?
        .query_row(params![up_to.get() as i64, key], |row| row.get(0))
        .optional()?;
    if let Some(read) = moved {
        return Ok(Applied::Read { read_seq: last_seq(read)?, advanced: true });
    }
    let read: Option<i64> = tx
        .prepare_cached("SELECT read_seq FROM feeds WHERE feed = ?")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    Ok(Applied::Read { read_seq: last_seq(read.unwrap_or(0))?, advanced: false })
}

/// `Store::feed`: the feed's row and its items in one read transaction (one snapshot).
pub(super) fn page(
    connection: &mut Connection,
    feed: &Feed,
    after: Option<LastSeq>,
    limit: usize,
    not_before: Option<Timestamp>,
) -> Result<FeedPage, StoreError> {
    let key = feed.key();
    let tx = connection.transaction()?;
    let seqs: Option<(i64, i64)> = tx
        .prepare_cached("SELECT last_seq, read_seq FROM feeds WHERE feed = ?")?
        .query_row([&key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (last, read) = seqs.unwrap_or((0, 0));
    let after = after.map_or(read, |seq| seq.get() as i64);
    let sql = format!(
        "SELECT {FEED_ITEM_COLUMNS} FROM feed_items WHERE feed = ? AND seq > ? AND at >= ? ORDER BY seq LIMIT ?"
    );
    let not_before = not_before.map_or(i64::MIN, Timestamp::as_unix_ms);
    let items = all(&tx, &sql, params![key, after, not_before, limit as i64], |row| feed_item(row))?;
    tx.commit()?;
    Ok(FeedPage { last_seq: last_seq(last)?, read_seq: last_seq(read)?, items })
}
