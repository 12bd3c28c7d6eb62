//! One connection to either engine: SQLite (through rusqlite) or PostgreSQL (through the
//! `postgres` client), behind one small API that the rest of the store writes its SQL against.
//!
//! SQL is written once, with SQLite's numbered placeholders (`?1`, `?2`); on PostgreSQL they
//! become `$1`, `$2`. Values travel as [`Value`] and come back through [`Row::get`], converted
//! to the Rust type asked for the way SQLite's dynamic typing would: an integer column read as
//! `bool`, a `bool` bound to an integer column. Where the dialects differ (DDL, the full-text
//! index, locking), the caller branches on [`Dialect`].
//!
//! Statements are prepared once per connection and cached by their SQL text, on both engines.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// Which SQL engine a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: one file, the embedded default.
    Sqlite,
    /// PostgreSQL 15 or newer: one server, many workers.
    Postgres,
}

/// An error of either engine, or a value of the wrong type.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite's.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL's (or its client's: the connection, the protocol).
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// The PostgreSQL connection was lost in the middle of a transaction, which went with it.
    #[error("the connection to the PostgreSQL server was lost in the middle of a transaction")]
    Lost,
    /// A query that must return a row returned none.
    #[error("the query returned no rows")]
    NoRow,
    /// A column held a value that does not convert to the type asked for.
    #[error("column {column}: {message}")]
    Type {
        /// The column's index.
        column: usize,
        /// What did not fit.
        message: String,
    },
}

/// One value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// An integer (also booleans, as 0 and 1).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes.
    Blob(Cow<'a, [u8]>),
}

/// What can be bound as a statement's parameter (see [`params!`](crate::params)).
pub trait ToValue {
    /// The value bound.
    fn to_value(&self) -> Value<'_>;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u64, usize, u8, i16, u16);

impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl ToValue for f32 {
    fn to_value(&self) -> Value<'_> {
        Value::Real(f64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl ToValue for Cow<'_, str> {
    fn to_value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}
impl ToValue for Value<'_> {
    fn to_value(&self) -> Value<'_> {
        match self {
            Value::Text(t) => Value::Text(Cow::Borrowed(t)),
            Value::Blob(b) => Value::Blob(Cow::Borrowed(b)),
            other => other.clone(),
        }
    }
}

/// Binds a statement's parameters: `params![id, owner, now]`, each anything [`ToValue`].
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[$crate::db::Value<'_>]
    };
    ($($value:expr),+ $(,)?) => {
        &[$($crate::db::ToValue::to_value(&$value)),+] as &[$crate::db::Value<'_>]
    };
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl ToSql for Value<'_> {
    /// Converts to whatever type PostgreSQL inferred for the parameter, as SQLite would store
    /// it: integers into any integer, float or boolean column, text into text.
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("cannot bind {self:?} to a parameter of type {ty}").into()
        };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i).map_err(|_| mismatch())?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i).map_err(|_| mismatch())?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    i.to_string().to_sql(&Type::TEXT, out)
                }
                _ => Err(mismatch()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::UNKNOWN => {
                    f.to_string().to_sql(&Type::TEXT, out)
                }
                _ => Err(mismatch()),
            },
            Value::Text(t) => match *ty {
                Type::BYTEA => t.as_bytes().to_sql(ty, out),
                Type::INT8 | Type::INT4 | Type::INT2 | Type::FLOAT8 | Type::FLOAT4 | Type::BOOL => {
                    Err(mismatch())
                }
                _ => t.as_ref().to_sql(&Type::TEXT, out),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_ref().to_sql(ty, out),
                _ => Err(mismatch()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column's value as read, before conversion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// SQL NULL.
    Null,
    /// An integer or boolean.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// A Rust type a column converts to (see [`Row::get`]).
pub trait FromValue: Sized {
    /// Converts, or says why not.
    fn from_value(value: ValueRef<'_>) -> Result<Self, String>;
}

fn wrong(value: ValueRef<'_>, wanted: &str) -> String {
    format!("{value:?} is not {wanted}")
}

impl FromValue for i64 {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Int(i) => Ok(i),
            other => Err(wrong(other, "an integer")),
        }
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
                let i = i64::from_value(value)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range"))
            }
        }
    )*};
}
int_from_value!(i32, u32, u64, usize, u8, u16, i16);

impl FromValue for bool {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        Ok(i64::from_value(value)? != 0)
    }
}
impl FromValue for f64 {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Int(i) => Ok(i as f64),
            other => Err(wrong(other, "a number")),
        }
    }
}
impl FromValue for f32 {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        Ok(f64::from_value(value)? as f32)
    }
}
impl FromValue for String {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Text(t) => Ok(t.to_string()),
            other => Err(wrong(other, "text")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            ValueRef::Text(t) => Ok(t.as_bytes().to_vec()),
            other => Err(wrong(other, "bytes")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: ValueRef<'_>) -> Result<Self, String> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One result row of either engine.
pub enum Row<'r> {
    /// SQLite's.
    Sqlite(&'r rusqlite::Row<'r>),
    /// PostgreSQL's.
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `index` as a `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, DbError> {
        T::from_value(self.value(index)?).map_err(|message| DbError::Type {
            column: index,
            message,
        })
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        match self {
            Row::Sqlite(row) => row.as_ref().column_count(),
            Row::Postgres(row) => row.len(),
        }
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of column `index`.
    pub fn column_name(&self, index: usize) -> Result<&str, DbError> {
        match self {
            Row::Sqlite(row) => Ok(row.as_ref().column_name(index)?),
            Row::Postgres(row) => {
                row.columns()
                    .get(index)
                    .map(|c| c.name())
                    .ok_or_else(|| DbError::Type {
                        column: index,
                        message: "no such column".into(),
                    })
            }
        }
    }

    /// Column `index` as read, before conversion.
    pub fn value(&self, index: usize) -> Result<ValueRef<'_>, DbError> {
        let type_error = |message: String| DbError::Type {
            column: index,
            message,
        };
        match self {
            Row::Sqlite(row) => {
                use rusqlite::types::ValueRef as V;
                Ok(match row.get_ref(index)? {
                    V::Null => ValueRef::Null,
                    V::Integer(i) => ValueRef::Int(i),
                    V::Real(f) => ValueRef::Real(f),
                    V::Text(t) => ValueRef::Text(
                        std::str::from_utf8(t).map_err(|e| type_error(e.to_string()))?,
                    ),
                    V::Blob(b) => ValueRef::Blob(b),
                })
            }
            Row::Postgres(row) => {
                let ty = row
                    .columns()
                    .get(index)
                    .ok_or_else(|| type_error("no such column".into()))?
                    .type_()
                    .clone();
                let value = match ty {
                    Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(ValueRef::Int),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(index)?
                        .map(|i| ValueRef::Int(i.into())),
                    Type::INT2 => row
                        .try_get::<_, Option<i16>>(index)?
                        .map(|i| ValueRef::Int(i.into())),
                    Type::OID => row
                        .try_get::<_, Option<u32>>(index)?
                        .map(|i| ValueRef::Int(i.into())),
                    Type::BOOL => row
                        .try_get::<_, Option<bool>>(index)?
                        .map(|b| ValueRef::Int(b.into())),
                    Type::FLOAT8 => row.try_get::<_, Option<f64>>(index)?.map(ValueRef::Real),
                    Type::FLOAT4 => row
                        .try_get::<_, Option<f32>>(index)?
                        .map(|f| ValueRef::Real(f.into())),
                    Type::BYTEA => row.try_get::<_, Option<&[u8]>>(index)?.map(ValueRef::Blob),
                    Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                        row.try_get::<_, Option<&str>>(index)?.map(ValueRef::Text)
                    }
                    other => {
                        return Err(type_error(format!(
                            "PostgreSQL type {other} is not read by imgd (cast it in the query)"
                        )));
                    }
                };
                Ok(value.unwrap_or(ValueRef::Null))
            }
        }
    }
}

/// How many prepared statements a PostgreSQL connection keeps (SQLite's cache holds 64).
const STATEMENT_CACHE: usize = 256;

/// A PostgreSQL connection and its prepared statements.
struct PgConnection {
    client: postgres::Client,
    /// How to connect again when the server closes the connection.
    config: postgres::Config,
    statements: HashMap<String, postgres::Statement>,
    /// Statements that set the session up (`LISTEN`, a worker's lock), run again on every
    /// new connection.
    session: Vec<String>,
    /// A transaction is open: a lost connection then fails it instead of reconnecting, so
    /// no statement of it ever runs outside it.
    in_transaction: bool,
}

/// One connection to the database: SQLite's or PostgreSQL's.
pub struct Db(Engine);

enum Engine {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<PgConnection>>),
}

/// `sql` with SQLite's `?N` (and bare `?`) placeholders written as PostgreSQL's `$N`. Quoted
/// text and identifiers are left alone.
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    out.push_str(&digits);
                }
            }
            None => out.push(c),
        }
    }
    out
}

impl Db {
    /// A SQLite connection.
    pub(crate) fn sqlite(conn: rusqlite::Connection) -> Db {
        Db(Engine::Sqlite(conn))
    }

    /// A PostgreSQL connection from a connected client and how it was connected.
    pub(crate) fn postgres(client: postgres::Client, config: postgres::Config) -> Db {
        Db(Engine::Postgres(Box::new(RefCell::new(PgConnection {
            client,
            config,
            statements: HashMap::new(),
            session: Vec::new(),
            in_transaction: false,
        }))))
    }

    /// Which engine this is.
    pub fn dialect(&self) -> Dialect {
        match &self.0 {
            Engine::Sqlite(_) => Dialect::Sqlite,
            Engine::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection, when this is SQLite.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.0 {
            Engine::Sqlite(conn) => Some(conn),
            Engine::Postgres(_) => None,
        }
    }

    /// Runs several statements with no parameters (DDL, transaction control).
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        match &self.0 {
            Engine::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Engine::Postgres(pg) => Ok(pg.borrow_mut().ready()?.batch_execute(sql)?),
        }
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, DbError> {
        match &self.0 {
            Engine::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))?),
            Engine::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let statement = pg.statement(sql)?;
                let bound: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                Ok(pg.ready()?.execute(&statement, &bound)? as usize)
            }
        }
    }

    /// Runs a query and hands each row to `each` until it returns `false`.
    pub fn query_each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut each: impl FnMut(&Row<'_>) -> Result<bool, DbError>,
    ) -> Result<(), DbError> {
        match &self.0 {
            Engine::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(params))?;
                while let Some(row) = rows.next()? {
                    if !each(&Row::Sqlite(row))? {
                        break;
                    }
                }
                Ok(())
            }
            Engine::Postgres(pg) => {
                let rows = {
                    let mut pg = pg.borrow_mut();
                    let statement = pg.statement(sql)?;
                    let bound: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                    pg.ready()?.query(&statement, &bound)?
                };
                for row in &rows {
                    if !each(&Row::Postgres(row))? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Runs a query and maps every row.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let mut out = Vec::new();
        self.query_each(sql, params, |row| {
            out.push(map(row)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Runs a query and maps its first row, if any.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        let mut map = Some(map);
        let mut out = None;
        self.query_each(sql, params, |row| {
            if let Some(map) = map.take() {
                out = Some(map(row)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// Runs a query and maps its first row; no row is [`DbError::NoRow`].
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.query_opt(sql, params, map)?.ok_or(DbError::NoRow)
    }

    /// Opens the savepoint `name` inside a transaction: what follows can be rolled back to it
    /// ([`Db::rollback_to`]) without losing the rest of the transaction.
    pub fn savepoint(&self, name: &str) -> Result<(), DbError> {
        self.batch(&format!("SAVEPOINT {name}"))
    }

    /// Keeps what was done since the savepoint `name`.
    pub fn release(&self, name: &str) -> Result<(), DbError> {
        self.batch(&format!("RELEASE SAVEPOINT {name}"))
    }

    /// Undoes what was done since the savepoint `name`, and closes it.
    pub fn rollback_to(&self, name: &str) -> Result<(), DbError> {
        self.batch(&format!(
            "ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"
        ))
    }

    /// Starts a transaction that holds the write lock from its first statement: SQLite's
    /// `BEGIN IMMEDIATE` (so it never fails half-way on a lock another process took), a plain
    /// `BEGIN` on PostgreSQL (whose row locks are taken as rows are touched). It rolls back when
    /// dropped uncommitted.
    pub fn write_tx(&self) -> Result<Tx<'_>, DbError> {
        match &self.0 {
            Engine::Sqlite(conn) => conn.execute_batch("BEGIN IMMEDIATE")?,
            Engine::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.ready()?.batch_execute("BEGIN")?;
                pg.in_transaction = true;
            }
        }
        Ok(Tx {
            db: self,
            open: true,
        })
    }

    /// Ends the open transaction with `COMMIT` or `ROLLBACK`. A PostgreSQL connection lost
    /// meanwhile took the transaction with it: a rollback then has nothing left to do.
    fn end_tx(&self, statement: &str) -> Result<(), DbError> {
        match &self.0 {
            Engine::Sqlite(conn) => Ok(conn.execute_batch(statement)?),
            Engine::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.in_transaction = false;
                if pg.client.is_closed() && statement == "ROLLBACK" {
                    return Ok(());
                }
                Ok(pg.ready()?.batch_execute(statement)?)
            }
        }
    }

    /// Runs `sql`, a statement that sets the session up (`LISTEN`, taking a session lock); on
    /// PostgreSQL it runs again on every new connection after a lost one.
    pub fn session(&self, sql: &str) -> Result<(), DbError> {
        match &self.0 {
            Engine::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Engine::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.ready()?.batch_execute(sql)?;
                pg.session.push(sql.to_string());
                Ok(())
            }
        }
    }

    /// Waits up to `timeout` for a notification on a channel this session listens to
    /// ([`Db::session`] with `LISTEN`); `true` when one came (every pending one is taken).
    /// SQLite has no notifications: it waits the whole time and says `false`.
    pub fn wait_for_notification(&self, timeout: std::time::Duration) -> Result<bool, DbError> {
        match &self.0 {
            Engine::Sqlite(_) => {
                std::thread::sleep(timeout);
                Ok(false)
            }
            Engine::Postgres(pg) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut pg = pg.borrow_mut();
                let client = pg.ready()?;
                let mut notifications = client.notifications();
                let mut came = notifications.iter().next()?.is_some();
                if !came {
                    came = notifications.timeout_iter(timeout).next()?.is_some();
                }
                while notifications.iter().next()?.is_some() {}
                Ok(came)
            }
        }
    }
}

/// How long a lost PostgreSQL connection is tried again (a server restart, a failover) before
/// its error reaches the caller, who may try again: well within the systemd watchdog's minute,
/// which the daemon's scheduler must keep feeding meanwhile.
pub const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(20);

impl PgConnection {
    /// The client, connected again first when the server closed the connection: tried with
    /// pauses growing from 0.1 s to 5 s for up to [`RECONNECT_FOR`]. Inside a transaction a
    /// lost connection is an error instead: the transaction is gone, and its remaining
    /// statements must not run outside it.
    fn ready(&mut self) -> Result<&mut postgres::Client, DbError> {
        if self.client.is_closed() {
            if self.in_transaction {
                return Err(DbError::Lost);
            }
            self.reconnect()?;
        }
        Ok(&mut self.client)
    }

    fn reconnect(&mut self) -> Result<(), DbError> {
        let deadline = std::time::Instant::now() + RECONNECT_FOR;
        let mut pause = std::time::Duration::from_millis(100);
        let client = loop {
            match self.config.connect(postgres::NoTls) {
                Ok(client) => break client,
                Err(_) if std::time::Instant::now() + pause < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
                Err(error) => return Err(error.into()),
            }
        };
        self.client = client;
        self.statements.clear();
        for sql in &self.session {
            self.client.batch_execute(sql)?;
        }
        Ok(())
    }

    /// `sql` prepared on the current connection (connected again first if it was lost: the
    /// statements of a lost connection are gone with it).
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, DbError> {
        self.ready()?;
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&postgres_placeholders(sql))?;
        if self.statements.len() >= STATEMENT_CACHE {
            // Statements whose text varies (an id list written in) must not pile up.
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// An open transaction on a [`Db`]; statements go through it (it derefs to the [`Db`]).
pub struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl Tx<'_> {
    /// Commits.
    pub fn commit(mut self) -> Result<(), DbError> {
        self.open = false;
        self.db.end_tx("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.db.end_tx("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quotes() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d IN (?, ?)"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d IN ($1, $2)"
        );
        assert_eq!(postgres_placeholders("x = ?12"), "x = $12");
    }

    #[test]
    fn sqlite_values_convert_as_asked() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let row = db
            .query_row(
                "SELECT ?1, ?2, ?3, ?4, ?5",
                params![7i64, true, 2.5f64, "text", None::<i64>],
                |r| {
                    Ok((
                        r.get::<u32>(0)?,
                        r.get::<bool>(1)?,
                        r.get::<f64>(2)?,
                        r.get::<String>(3)?,
                        r.get::<Option<i64>>(4)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(row, (7, true, 2.5, "text".to_string(), None));
        let err = db
            .query_row("SELECT 'x'", params![], |r| r.get::<i64>(0))
            .unwrap_err();
        assert!(matches!(err, DbError::Type { column: 0, .. }), "{err}");
        assert!(matches!(
            db.query_row("SELECT 1 WHERE 0", params![], |r| r.get::<i64>(0)),
            Err(DbError::NoRow)
        ));
    }

    #[test]
    fn an_uncommitted_transaction_rolls_back() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.batch("CREATE TABLE t (x INTEGER)").unwrap();
        {
            let tx = db.write_tx().unwrap();
            tx.execute("INSERT INTO t VALUES (?1)", params![1]).unwrap();
        }
        let tx = db.write_tx().unwrap();
        tx.execute("INSERT INTO t VALUES (?1)", params![2]).unwrap();
        tx.commit().unwrap();
        let all = db
            .query_map("SELECT x FROM t", params![], |r| r.get::<i64>(0))
            .unwrap();
        assert_eq!(all, vec![2]);
    }
}
