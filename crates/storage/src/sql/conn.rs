//! The narrow interface the metadata logic talks to a database through, so
//! one body of SQL and rules serves every engine.
//!
//! Statements are written with PostgreSQL's `$1` placeholders; each engine
//! adapts them. Values are 64-bit integers and text only (timestamps, sizes
//! and digests need nothing else), so both engines map them exactly.

use std::sync::Arc;

use crate::error::DatabaseErrorKind;
use crate::lookup_cache::LookupCache;
use crate::{StorageError, StorageResult};

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    Text(&'a str),
    MaybeInt(Option<i64>),
    MaybeText(Option<&'a str>),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::MaybeInt(v)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::MaybeText(v)
    }
}

/// `[Param; N]` from expressions of any type [`Param`] converts from.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        [$($crate::sql::conn::Param::from($value)),*]
    };
}
pub(crate) use params;

/// A column's value in a result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

fn unexpected(value: &Value, wanted: &str) -> StorageError {
    StorageError::database(
        DatabaseErrorKind::Schema,
        format!("expected {wanted} from the database, got {value:?}"),
    )
}

/// A Rust value a column converts to.
pub trait FromValue: Sized {
    fn from_value(value: Value) -> StorageResult<Self>;
}

impl FromValue for i64 {
    fn from_value(value: Value) -> StorageResult<Self> {
        match value {
            Value::Int(v) => Ok(v),
            other => Err(unexpected(&other, "an integer")),
        }
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> StorageResult<Self> {
        match value {
            Value::Text(v) => Ok(v),
            other => Err(unexpected(&other, "text")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> StorageResult<Self> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A Rust value a whole result row converts to: a tuple of its columns.
pub trait FromRow: Sized {
    fn from_row(row: Vec<Value>) -> StorageResult<Self>;
}

macro_rules! tuple_from_row {
    ($count:literal: $($name:ident),+) => {
        impl<$($name: FromValue),+> FromRow for ($($name,)+) {
            fn from_row(row: Vec<Value>) -> StorageResult<Self> {
                if row.len() != $count {
                    return Err(StorageError::database(
                        DatabaseErrorKind::Schema,
                        format!("expected {} columns from the database, got {}", $count, row.len()),
                    ));
                }
                let mut columns = row.into_iter();
                Ok(($($name::from_value(columns.next().expect("counted"))?,)+))
            }
        }
    };
}

tuple_from_row!(1: A);
tuple_from_row!(2: A, B);
tuple_from_row!(3: A, B, C);
tuple_from_row!(4: A, B, C, D);
tuple_from_row!(5: A, B, C, D, E);
tuple_from_row!(6: A, B, C, D, E, F);

/// A connection, or a transaction on one. Statements are `'static` so an
/// engine can keep them prepared.
pub trait Conn {
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &'static str, params: &[Param<'_>]) -> StorageResult<u64>;

    /// Runs a query; returns its rows.
    fn query(&mut self, sql: &'static str, params: &[Param<'_>]) -> StorageResult<Vec<Vec<Value>>>;
}

impl dyn Conn + '_ {
    /// Every row of a query, converted.
    pub fn rows<R: FromRow>(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> StorageResult<Vec<R>> {
        self.query(sql, params)?
            .into_iter()
            .map(R::from_row)
            .collect()
    }

    /// The first row of a query, converted, if it has one.
    pub fn row<R: FromRow>(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> StorageResult<Option<R>> {
        self.query(sql, params)?
            .into_iter()
            .next()
            .map(R::from_row)
            .transpose()
    }

    /// The first column of a query's first row, if it has one.
    pub fn value<V: FromValue>(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> StorageResult<Option<V>> {
        Ok(self.row::<(V,)>(sql, params)?.map(|(v,)| v))
    }

    /// The first column of every row of a query.
    pub fn column<V: FromValue>(
        &mut self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> StorageResult<Vec<V>> {
        Ok(self
            .rows::<(V,)>(sql, params)?
            .into_iter()
            .map(|(v,)| v)
            .collect())
    }

    /// Whether a query returns a row.
    pub fn exists(&mut self, sql: &'static str, params: &[Param<'_>]) -> StorageResult<bool> {
        Ok(!self.query(sql, params)?.is_empty())
    }
}

/// How durable a write must be when it reports success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a power cut once committed.
    Full,
    /// May be undone by a power cut right after (never torn): for a
    /// collection's deletes, which the next run makes again.
    Deferred,
}

/// A database engine the metadata store runs on.
///
/// Every method runs on a blocking thread. `f` may run more than once: an
/// engine that aborts one of two conflicting transactions (PostgreSQL's
/// serializable isolation) runs the aborted one again, so `f` must do all
/// its work through the connection and keep no effect outside it.
pub trait Engine: Send + Sync + 'static {
    /// Keeps `lookups` coherent with the writes of other processes: resumes
    /// it while their [`Engine::announce_stale`]s arrive, suspends it while
    /// they cannot. An engine this process alone writes resumes it at once.
    fn watch_lookups(&self, lookups: Arc<LookupCache>);

    /// Within a write's transaction: tells the other processes on the
    /// database, once it commits, that `repository`'s lookups are stale.
    fn announce_stale(&self, tx: &mut dyn Conn, repository: &str) -> StorageResult<()>;

    /// Runs `f` outside a transaction: each statement sees what was
    /// committed before it.
    fn read<T>(&self, f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>) -> StorageResult<T>;

    /// Runs `f`'s queries on one consistent snapshot of the store.
    fn snapshot<T>(&self, f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>)
    -> StorageResult<T>;

    /// Runs `f` in a transaction that commits whole or not at all, as if no
    /// other transaction ran at the same time; `f`'s error rolls it back.
    fn write<T>(
        &self,
        durability: Durability,
        f: &mut dyn FnMut(&mut dyn Conn) -> StorageResult<T>,
    ) -> StorageResult<T>;
}
