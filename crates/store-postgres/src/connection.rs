//! A PostgreSQL connection as the shared store code (`store_sql`) uses it.
//!
//! Each connection drives its `tokio_postgres` client on a runtime of its own (current-thread,
//! run only while a call waits), so that statements can be pipelined: those kept back by
//! `batch_deferred` (savepoints, the transaction's start) go in the same round trip as the
//! statement after them.
//!
//! Parameters are declared with the type of their value (bigint, double precision, text,
//! boolean, json, bigint[]) when a statement is prepared, so that PostgreSQL's strict typing
//! never has to guess from context what a literal of a `$filter` is; NULLs are left for it
//! to infer. Prepared statements are cached per text and parameter types; a NULL binds to a
//! statement prepared with any type for it. Cells are read in
//! the binary format whatever their type, `numeric` included (integers come back as
//! integers).

use std::cell::RefCell;
use std::collections::HashMap;

use futures_util::{StreamExt, TryStreamExt};
use postgres_types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};
use store_sql::{Number, Param, SqlRow, StoreError};
use tokio_postgres::{Client, Statement};

/// Statements prepared per connection at most; the cache starts again when full.
const MAX_STATEMENTS: usize = 512;

pub fn db_error(error: tokio_postgres::Error) -> StoreError {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        // Class 23: integrity constraint violations (foreign key, unique, not null, check).
        if code.starts_with("23") {
            return StoreError::Conflict(db.message().to_owned());
        }
        // Class 40: transaction rollback (a deadlock between writers, a serialization failure).
        if code.starts_with("40") {
            return StoreError::Busy(db.message().to_owned());
        }
        // query_canceled: the statement_timeout of a read's deadline (`set_deadline`).
        if code == "57014" {
            return store_sql::over_budget();
        }
        // Class 22: data exceptions, a value the database cannot hold or compute (a filter's
        // arithmetic past bigint or double precision, a substring position past integer):
        // the request's values, which SQLite would have taken as floating point.
        if code.starts_with("22") {
            return StoreError::Rejected(format!("a value is out of the database's range: {}", db.message()));
        }
        // The driver's own message says only "db error"; the server's says what and where.
        return StoreError::Database(format!("{db}").into());
    }
    StoreError::Database(Box::new(error))
}

/// Prepared statements by text, one per list of declared parameter types (OIDs).
/// By text, the statements prepared of it (with other parameter types).
type Prepared = HashMap<String, Vec<Statement>>;

/// One PostgreSQL connection with its prepared statements.
pub struct PgConnection {
    runtime: tokio::runtime::Runtime,
    client: Client,
    statements: RefCell<Prepared>,
    /// The column types of tables bulk-inserted into, by table and column.
    column_types: RefCell<HashMap<String, HashMap<String, Type>>>,
    /// Names the cursors of large results.
    cursors: std::cell::Cell<u64>,
    /// The deadline of the current read job, and the statement_timeout last set for it.
    deadline: std::cell::Cell<Option<(std::time::Instant, std::time::Duration)>>,
    /// Once true, the deadline no longer applies (`lift_deadline_when`).
    lifted: RefCell<Option<std::sync::Arc<std::sync::atomic::AtomicBool>>>,
    /// Statements waiting to go with the next one (`batch_deferred`, `execute_deferred`).
    deferred: RefCell<Vec<Later>>,
    /// Why the transaction failed in a deferred statement: every statement but `ROLLBACK` is
    /// refused until one ends it.
    failed: RefCell<Option<String>>,
    /// Keys drawn ahead from tables' sequences (`reserve_key`), by table, last first.
    reserved: RefCell<HashMap<String, Vec<i64>>>,
    /// The statement drawing keys from the sequence of a table's key column, by table.
    next_keys: RefCell<HashMap<String, String>>,
    /// The size of the block of keys last drawn for `reserve_key`, and when, by table.
    blocks: RefCell<HashMap<String, (i64, std::time::Instant)>>,
}

/// A statement sent later, pipelined before the next one that needs an answer.
enum Later {
    /// Statements without parameters, as one simple query (`batch_deferred`): its failure
    /// fails the transaction for good.
    Simple(String),
    /// A prepared statement whose row count nobody needs (`execute_deferred`): its failure is
    /// the next statement's, as if it had run then; with `for_transaction`
    /// (`execute_deferred_for_transaction`) it fails the transaction for good as well.
    Execute { statement: Statement, params: Vec<Param>, for_transaction: bool },
}

/// Keys drawn from a sequence at a time by `reserve_key`, at first and at most.
const RESERVED_KEYS: i64 = 64;
const MOST_RESERVED_KEYS: i64 = 1024;

/// The sequence of `table`'s column `key`, as a quoted name.
const SEQUENCE_OF: &str = "SELECT quote_literal(COALESCE(pg_get_serial_sequence($1, $2), $1 || '_' || $2 || '_seq'))";

/// Rows fetched at a time from a large result's cursor.
const FETCH_ROWS: usize = 2_000;

/// A parameter type left for the server to infer (OID 0).
fn inferred() -> Type {
    Type::new("unspecified".into(), 0, Kind::Pseudo, "pg_catalog".into())
}

fn declared(param: &Param) -> Type {
    match param {
        Param::Null => inferred(),
        Param::Integer(_) => Type::INT8,
        Param::Real(_) => Type::FLOAT8,
        Param::Text(_) => Type::TEXT,
        Param::Boolean(_) => Type::BOOL,
        Param::Json(_) => Type::JSON,
        Param::IdList(_) => Type::INT8_ARRAY,
    }
}

/// A parameter bound in the type it was declared with (or that PostgreSQL inferred for a
/// NULL).
#[derive(Debug)]
struct Bound<'p>(&'p Param);

impl ToSql for Bound<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres_types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Param::Null => Ok(IsNull::Yes),
            Param::Integer(i) if *ty == Type::NUMERIC => numeric_to_sql(&i.to_string(), out),
            Param::Real(r) if *ty == Type::NUMERIC => numeric_to_sql(&r.to_string(), out),
            Param::Integer(i) => i.to_sql(ty, out),
            Param::Real(r) => r.to_sql(ty, out),
            Param::Text(s) => s.as_str().to_sql(ty, out),
            Param::Boolean(b) => b.to_sql(ty, out),
            Param::Json(s) => {
                if *ty == Type::JSONB {
                    out.extend_from_slice(&[1]);
                }
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Param::IdList(ids) => ids.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The raw binary cell of any type, with the OID of its type (matched as a number: a large
/// page decodes a dozen cells per row).
struct Raw<'a> {
    oid: u32,
    bytes: &'a [u8],
}

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw { oid: ty.oid(), bytes: raw })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The OIDs of the types cells are read from.
mod oid {
    pub const BOOL: u32 = 16;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const NUMERIC: u32 = 1700;
    pub const JSONB: u32 = 3802;
}

fn wrong_type(i: usize, oid: u32, wanted: &str) -> StoreError {
    let name = Type::from_oid(oid).map_or_else(|| format!("type {oid}"), |ty| ty.to_string());
    StoreError::Database(format!("column {i} is {name}, not {wanted}").into())
}

fn decoded<T, E: std::fmt::Display>(i: usize, result: Result<T, E>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Database(format!("column {i}: {e}").into()))
}

/// A big-endian fixed-size cell.
fn fixed<const N: usize>(i: usize, bytes: &[u8]) -> Result<[u8; N], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Database(format!("column {i}: {} bytes, not {N}", bytes.len()).into()))
}

struct Row<'r>(&'r tokio_postgres::Row);

impl Row<'_> {
    fn raw(&self, i: usize) -> Result<Option<Raw<'_>>, StoreError> {
        self.0.try_get::<_, Option<Raw<'_>>>(i).map_err(db_error)
    }
}

impl SqlRow for Row<'_> {
    fn integer(&self, i: usize) -> Result<Option<i64>, StoreError> {
        let Some(cell) = self.raw(i)? else { return Ok(None) };
        Ok(Some(match cell.oid {
            oid::INT8 => i64::from_be_bytes(fixed(i, cell.bytes)?),
            oid::INT4 => i64::from(i32::from_be_bytes(fixed(i, cell.bytes)?)),
            oid::INT2 => i64::from(i16::from_be_bytes(fixed(i, cell.bytes)?)),
            oid::BOOL => i64::from(fixed::<1>(i, cell.bytes)?[0] != 0),
            oid::NUMERIC => match decoded(i, numeric(cell.bytes))? {
                Number::Integer(n) => n,
                Number::Real(_) => return Err(wrong_type(i, cell.oid, "an integer")),
            },
            _ => return Err(wrong_type(i, cell.oid, "an integer")),
        }))
    }

    fn number(&self, i: usize) -> Result<Option<Number>, StoreError> {
        let Some(cell) = self.raw(i)? else { return Ok(None) };
        Ok(Some(match cell.oid {
            oid::NUMERIC => decoded(i, numeric(cell.bytes))?,
            oid::FLOAT8 => Number::Real(f64::from_be_bytes(fixed(i, cell.bytes)?)),
            oid::FLOAT4 => Number::Real(f64::from(f32::from_be_bytes(fixed(i, cell.bytes)?))),
            _ => Number::Integer(self.integer(i)?.unwrap_or_default()),
        }))
    }

    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        let Some(cell) = self.raw(i)? else { return Ok(None) };
        match cell.oid {
            oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON | oid::UNKNOWN => {
                Ok(Some(decoded(i, std::str::from_utf8(cell.bytes))?.to_owned()))
            }
            oid::JSONB => self.json(i),
            _ => Err(wrong_type(i, cell.oid, "text")),
        }
    }

    fn boolean(&self, i: usize) -> Result<Option<bool>, StoreError> {
        let Some(cell) = self.raw(i)? else { return Ok(None) };
        match cell.oid {
            oid::BOOL => Ok(Some(fixed::<1>(i, cell.bytes)?[0] != 0)),
            _ => Ok(self.integer(i)?.map(|b| b != 0)),
        }
    }

    fn json(&self, i: usize) -> Result<Option<String>, StoreError> {
        let Some(cell) = self.raw(i)? else { return Ok(None) };
        let bytes = match cell.oid {
            // jsonb's binary form is a version byte and the text.
            oid::JSONB => cell.bytes.get(1..).unwrap_or_default(),
            oid::JSON | oid::TEXT | oid::VARCHAR => cell.bytes,
            _ => return Err(wrong_type(i, cell.oid, "JSON")),
        };
        Ok(Some(decoded(i, std::str::from_utf8(bytes))?.to_owned()))
    }
}

/// Writes a decimal text (`-12.5`, `42`, `0.000123`; `NaN`, `inf`) as a binary `numeric`
/// (for COPY, which takes values in the column's own type).
fn numeric_to_sql(
    text: &str,
    out: &mut postgres_types::private::BytesMut,
) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
    let header = |out: &mut postgres_types::private::BytesMut, digits: u16, weight: i16, sign: u16, scale: u16| {
        for word in [digits, weight as u16, sign, scale] {
            out.extend_from_slice(&word.to_be_bytes());
        }
    };
    match text {
        "NaN" => {
            header(out, 0, 0, 0xC000, 0);
            return Ok(IsNull::No);
        }
        "inf" => {
            header(out, 0, 0, 0xD000, 0);
            return Ok(IsNull::No);
        }
        "-inf" => {
            header(out, 0, 0, 0xF000, 0);
            return Ok(IsNull::No);
        }
        _ => {}
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a decimal number").into());
    }
    // Base-10000 groups around the decimal point: the whole part padded on the left, the
    // fraction on the right. Leading and trailing zero groups are allowed; the server strips
    // them.
    let whole = format!("{}{whole}", "0".repeat((4 - whole.len() % 4) % 4));
    let padded = format!("{fraction}{}", "0".repeat((4 - fraction.len() % 4) % 4));
    let groups: Vec<u16> = whole
        .as_bytes()
        .chunks(4)
        .chain(padded.as_bytes().chunks(4))
        .map(|chunk| chunk.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
        .collect();
    let weight = i16::try_from(whole.len() / 4).map_err(|_| "a numeric too large")? - 1;
    let count = u16::try_from(groups.len()).map_err(|_| "a numeric too long")?;
    let scale = u16::try_from(fraction.len()).map_err(|_| "a numeric too precise")?;
    header(out, count, weight, if negative { 0x4000 } else { 0 }, scale);
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
    Ok(IsNull::No)
}

/// A `numeric` in PostgreSQL's binary form: digit count, weight (of the first base-10000
/// digit), sign, display scale, then the base-10000 digits. Integral values that fit are
/// integers; everything else is the nearest double.
pub fn numeric(bytes: &[u8]) -> Result<Number, String> {
    let word = |at: usize| -> Result<u16, String> {
        bytes.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "a short numeric".to_owned())
    };
    let digits = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    let scale = word(6)?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok(Number::Real(f64::NAN)),
        0xD000 => return Ok(Number::Real(f64::INFINITY)),
        0xF000 => return Ok(Number::Real(f64::NEG_INFINITY)),
        other => return Err(format!("a numeric with sign {other:#x}")),
    }
    let negative = sign == 0x4000;
    let groups: Vec<u16> = (0..digits).map(|g| word(8 + 2 * g)).collect::<Result<_, _>>()?;
    if scale == 0 {
        // weight + 1 groups before the point; missing ones are zeros.
        let mut value: i128 = 0;
        let mut exact = weight < 40;
        if exact {
            for g in 0..=weight.max(-1) {
                let digit = groups.get(g as usize).copied().unwrap_or(0);
                value = value * 10_000 + i128::from(digit);
                if value > i128::from(i64::MAX) + 1 {
                    exact = false;
                    break;
                }
            }
        }
        let value = if negative { -value } else { value };
        if exact && let Ok(n) = i64::try_from(value) {
            return Ok(Number::Integer(n));
        }
    }
    // The decimal text, parsed as the nearest double: `digits.digits` with no allocation for
    // the usual sizes (a value read per row of large pages).
    let mut text: smallvec_text::Text = smallvec_text::Text::default();
    if negative {
        text.push(b'-');
    }
    let push_group = |text: &mut smallvec_text::Text, digit: u16, pad: bool| {
        let digits = [(digit / 1000) as u8, (digit / 100 % 10) as u8, (digit / 10 % 10) as u8, (digit % 10) as u8];
        let skip = if pad { 0 } else { digits.iter().take(3).take_while(|d| **d == 0).count() };
        for d in &digits[skip..] {
            text.push(b'0' + d);
        }
    };
    if weight < 0 {
        text.push(b'0');
    } else {
        for g in 0..=weight {
            let digit = groups.get(g as usize).copied().unwrap_or(0);
            push_group(&mut text, digit, g != 0);
        }
    }
    text.push(b'.');
    for _ in 0..(-weight - 1).max(0) {
        text.extend(b"0000");
    }
    for g in (weight + 1).max(0)..digits as i32 {
        push_group(&mut text, groups[g as usize], true);
    }
    text.push(b'0');
    let text = text.as_str()?;
    text.parse::<f64>().map(Number::Real).map_err(|e| format!("numeric {text}: {e}"))
}

/// A short text built byte by byte, on the stack while it fits.
mod smallvec_text {
    const INLINE: usize = 64;

    pub enum Text {
        Inline([u8; INLINE], usize),
        Heap(Vec<u8>),
    }

    impl Default for Text {
        fn default() -> Text {
            Text::Inline([0; INLINE], 0)
        }
    }

    impl Text {
        pub fn push(&mut self, byte: u8) {
            match self {
                Text::Inline(bytes, len) if *len < INLINE => {
                    bytes[*len] = byte;
                    *len += 1;
                }
                Text::Inline(bytes, len) => {
                    let mut heap = bytes[..*len].to_vec();
                    heap.push(byte);
                    *self = Text::Heap(heap);
                }
                Text::Heap(heap) => heap.push(byte),
            }
        }

        pub fn extend(&mut self, more: &[u8]) {
            for byte in more {
                self.push(*byte);
            }
        }

        pub fn as_str(&self) -> Result<&str, String> {
            let bytes = match self {
                Text::Inline(bytes, len) => &bytes[..*len],
                Text::Heap(heap) => heap,
            };
            std::str::from_utf8(bytes).map_err(|e| e.to_string())
        }
    }
}

impl PgConnection {
    /// Connects as `config` says, over TLS with `tls` when given (`sslmode=require` then,
    /// whatever the config says).
    pub fn connect(
        config: &tokio_postgres::Config,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<PgConnection, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        // The connection's task does the socket's work, whenever a call waits on the runtime.
        let client = match tls {
            None => {
                let (client, connection) = runtime.block_on(config.connect(tokio_postgres::NoTls)).map_err(db_error)?;
                runtime.spawn(async move { drive(connection.await) });
                client
            }
            Some(tls) => {
                let mut config = config.clone();
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let (client, connection) = runtime.block_on(config.connect(tls)).map_err(db_error)?;
                runtime.spawn(async move { drive(connection.await) });
                client
            }
        };
        Ok(PgConnection::new(runtime, client))
    }

    fn new(runtime: tokio::runtime::Runtime, client: Client) -> PgConnection {
        PgConnection {
            runtime,
            client,
            statements: RefCell::default(),
            column_types: RefCell::default(),
            cursors: std::cell::Cell::new(0),
            deadline: std::cell::Cell::new(None),
            lifted: RefCell::new(None),
            deferred: RefCell::default(),
            failed: RefCell::default(),
            reserved: RefCell::default(),
            next_keys: RefCell::default(),
            blocks: RefCell::default(),
        }
    }

    /// Refuses statements once a deferred one failed.
    fn check_failed(&self) -> Result<(), StoreError> {
        match self.failed.borrow().as_ref() {
            Some(why) => {
                Err(StoreError::Database(format!("an earlier statement of the transaction failed: {why}").into()))
            }
            None => Ok(()),
        }
    }

    /// Runs `sql` as one simple query, after the deferred statements.
    fn simple(&self, sql: &str) -> Result<(), StoreError> {
        self.pipelined(self.client.batch_execute(sql))
    }

    /// Fails the transaction for good, with `error`.
    fn failing(&self, error: StoreError) -> StoreError {
        self.failed.replace(Some(error.to_string()));
        error
    }

    /// Runs `work`, with the deferred statements sent before it in the same round trip. The
    /// first of them to fail is the answer (those after it fail because it did).
    fn pipelined<T>(&self, work: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, StoreError> {
        self.check_failed()?;
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        if deferred.is_empty() {
            return self.runtime.block_on(work).map_err(db_error);
        }
        let sent = deferred.iter().map(|later| {
            let request: std::pin::Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + '_>> = match later {
                Later::Simple(text) => Box::pin(self.client.batch_execute(text)),
                Later::Execute { statement, params, .. } => {
                    Box::pin(async { self.client.execute_raw(statement, params.iter().map(Bound)).await.map(drop) })
                }
            };
            request
        });
        // Each request is sent when first polled, and both `join`s poll in order.
        let (before, result) =
            self.runtime.block_on(futures_util::future::join(futures_util::future::join_all(sent), work));
        for (later, outcome) in deferred.iter().zip(before) {
            if let Err(e) = outcome {
                let e = db_error(e);
                return Err(match later {
                    Later::Simple(_) | Later::Execute { for_transaction: true, .. } => self.failing(e),
                    Later::Execute { for_transaction: false, .. } => e,
                });
            }
        }
        result.map_err(db_error)
    }

    /// Prepares `sql` (when new) to go with the next statement.
    fn defer(&self, sql: &str, params: &[Param], for_transaction: bool) -> Result<(), StoreError> {
        self.check_failed()?;
        let statement = self.prepared(sql, params)?;
        self.deferred.borrow_mut().push(Later::Execute { statement, params: params.to_vec(), for_transaction });
        Ok(())
    }

    /// Whether the connection is gone (the server closed it).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The statement `sql` prepared for `params`: one prepared before whose parameter types
    /// are those declared for every value that is not NULL (a NULL binds as any type), else
    /// one prepared now. So rows whose NULLs fall in other columns (an Observation without a
    /// resultTime beside one with) share a statement, rather than each pattern of NULLs
    /// costing a round trip to prepare and a plan of its own.
    fn prepared(&self, sql: &str, params: &[Param]) -> Result<Statement, StoreError> {
        let types: Vec<Type> = params.iter().map(declared).collect();
        let fits = |statement: &Statement| {
            statement.params().len() == types.len()
                && params
                    .iter()
                    .zip(&types)
                    .zip(statement.params())
                    .all(|((param, want), has)| matches!(param, Param::Null) || want == has)
        };
        if let Some(found) = self.statements.borrow().get(sql).and_then(|v| v.iter().find(|s| fits(s)).cloned()) {
            return Ok(found);
        }
        let statement = self.runtime.block_on(self.client.prepare_typed(sql, &types)).map_err(db_error)?;
        let mut statements = self.statements.borrow_mut();
        if statements.len() >= MAX_STATEMENTS {
            statements.clear();
        }
        statements.entry(sql.to_owned()).or_default().push(statement.clone());
        Ok(statement)
    }
}

impl PgConnection {
    /// How many statements of the text `sql` are prepared.
    #[cfg(test)]
    pub(crate) fn prepared_of(&self, sql: &str) -> usize {
        self.statements.borrow().get(sql).map_or(0, Vec::len)
    }

    /// Before a statement: fails once the deadline passed, and shortens the statement_timeout
    /// when less than half of the last one is left, so no statement runs far past it.
    fn within_deadline(&self) -> Result<(), StoreError> {
        let Some((deadline, timeout)) = self.deadline.get() else { return Ok(()) };
        if self.lifted.borrow().as_ref().is_some_and(|l| l.load(std::sync::atomic::Ordering::Relaxed)) {
            // The answer started going out: no statement of it may be stopped any more.
            self.deadline.set(None);
            self.runtime.block_on(self.client.batch_execute("SET LOCAL statement_timeout = 0")).map_err(db_error)?;
            return Ok(());
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(store_sql::over_budget());
        }
        if left < timeout / 2 {
            self.set_statement_timeout(deadline, left)?;
        }
        Ok(())
    }

    fn set_statement_timeout(&self, deadline: std::time::Instant, left: std::time::Duration) -> Result<(), StoreError> {
        let ms = left.as_millis().clamp(1, i32::MAX as u128);
        let statement = format!("SET LOCAL statement_timeout = {ms}");
        self.runtime.block_on(self.client.batch_execute(&statement)).map_err(db_error)?;
        self.deadline.set(Some((deadline, left)));
        Ok(())
    }
}

impl store_sql::Connection for PgConnection {
    fn query(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.check_failed()?;
        self.within_deadline()?;
        let statement = self.prepared(sql, params)?;
        // The rows are read to the end before `each` sees them, so that it may run
        // statements of its own on this connection (`$expand` does).
        let rows: Vec<tokio_postgres::Row> = self.pipelined(async {
            self.client.query_raw(&statement, params.iter().map(Bound)).await?.try_collect().await
        })?;
        for row in &rows {
            if !each(&Row(row))? {
                break;
            }
        }
        Ok(())
    }

    /// All sent before any is read.
    fn query_many(
        &self,
        queries: &[(&str, &[Param])],
        each: &mut dyn FnMut(usize, &dyn SqlRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.check_failed()?;
        self.within_deadline()?;
        let mut statements = Vec::with_capacity(queries.len());
        for (sql, params) in queries {
            statements.push(self.prepared(sql, params)?);
        }
        let requests = statements.iter().zip(queries).map(|(statement, (_, params))| async move {
            let rows: Vec<tokio_postgres::Row> =
                self.client.query_raw(statement, params.iter().map(Bound)).await?.try_collect().await?;
            Ok::<_, tokio_postgres::Error>(rows)
        });
        // `try_join_all` polls in order, so every request is sent before any answer is awaited.
        let answers = self.pipelined(futures_util::future::try_join_all(requests))?;
        for (i, rows) in answers.iter().enumerate() {
            for row in rows {
                each(i, &Row(row))?;
            }
        }
        Ok(())
    }

    /// Through a cursor of the job's transaction, `FETCH_ROWS` at a time.
    fn query_large(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.through_cursor(sql, params, each, false)
    }

    /// As `query_large`, with the next `FETCH` asked for before `each` sees the rows of the
    /// last, so that the server reads on while they are decoded.
    fn query_ahead(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.through_cursor(sql, params, each, true)
    }

    fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, StoreError> {
        self.check_failed()?;
        self.within_deadline()?;
        let statement = self.prepared(sql, params)?;
        self.pipelined(self.client.execute_raw(&statement, params.iter().map(Bound)))
    }

    /// Runs statements without parameters (transaction control, migrations) as one simple
    /// query.
    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        if sql == "ROLLBACK" {
            self.deferred.borrow_mut().clear();
            self.failed.replace(None);
        }
        self.simple(sql)
    }

    /// Kept until the next statement, and sent before it in the same round trip when that
    /// one has no parameters.
    fn batch_deferred(&self, sql: &str) -> Result<(), StoreError> {
        self.check_failed()?;
        let mut deferred = self.deferred.borrow_mut();
        if let Some(Later::Simple(text)) = deferred.last_mut() {
            // A savepoint released before any statement went out need not go out at all.
            if let Some(name) = sql.strip_prefix("RELEASE SAVEPOINT ") {
                let opened = format!("SAVEPOINT {name}; ");
                if let Some(before) = text.strip_suffix(&opened)
                    && (before.is_empty() || before.ends_with("; "))
                {
                    let keep = before.len();
                    text.truncate(keep);
                    if text.is_empty() {
                        deferred.pop();
                    }
                    return Ok(());
                }
            }
            text.push_str(sql);
            text.push_str("; ");
            return Ok(());
        }
        deferred.push(Later::Simple(format!("{sql}; ")));
        Ok(())
    }

    /// One simple query after what was deferred: `finish`, then `after`. The server stops a
    /// simple query at its first failure, so `after` runs only once `finish` (whose `COMMIT`
    /// answers only when its transaction is on disk) succeeded; the statements that completed
    /// tell which failed. A deferred statement that failed leaves the transaction failed, and
    /// its `COMMIT` unrun.
    fn commit_then(&self, finish: &[&str], after: Option<&str>) -> Result<Result<(), StoreError>, StoreError> {
        let mut text = finish.join("; ");
        if let Some(after) = after {
            text.push_str("; ");
            text.push_str(after);
        }
        let work = async {
            let mut completed = 0;
            let stream = match self.client.simple_query_raw(&text).await {
                Ok(stream) => stream,
                Err(e) => return Ok((completed, Some(e))),
            };
            futures_util::pin_mut!(stream);
            while let Some(message) = stream.next().await {
                match message {
                    Ok(tokio_postgres::SimpleQueryMessage::CommandComplete(_)) => completed += 1,
                    Ok(_) => {}
                    Err(e) => return Ok((completed, Some(e))),
                }
            }
            Ok::<_, tokio_postgres::Error>((completed, None))
        };
        let (completed, error) = self.pipelined(work)?;
        match error {
            None if completed >= finish.len() => Ok(Ok(())),
            Some(e) if completed >= finish.len() => Ok(Err(db_error(e))),
            Some(e) => Err(db_error(e)),
            None => Err(StoreError::Database("the server did not answer every statement of the commit".into())),
        }
    }

    /// Prepared now (when new), sent with the next statement.
    fn execute_deferred(&self, sql: &str, params: &[Param]) -> Result<(), StoreError> {
        self.defer(sql, params, false)
    }

    /// Prepared now (when new), sent with the next statement; its failure fails the
    /// transaction.
    fn execute_deferred_for_transaction(&self, sql: &str, params: &[Param]) -> Result<(), StoreError> {
        self.defer(sql, params, true)
    }

    fn flush_deferred(&self) -> Result<(), StoreError> {
        if self.deferred.borrow().is_empty() {
            return self.check_failed();
        }
        self.pipelined(async { Ok(()) })
    }

    /// From a block drawn at once: `RESERVED_KEYS`, twice as many as the last when that was
    /// used up within a second (up to `MOST_RESERVED_KEYS`), so that a busy writer seldom
    /// waits for its sequence and a quiet one leaves small gaps when it stops.
    fn reserve_key(&self, table: &str, key: &str) -> Result<Option<i64>, StoreError> {
        let kept = self.reserved.borrow_mut().get_mut(table).and_then(Vec::pop);
        if let Some(next) = kept {
            return Ok(Some(next));
        }
        let now = std::time::Instant::now();
        let block = match self.blocks.borrow().get(table) {
            Some(&(size, drawn)) if now.duration_since(drawn) < std::time::Duration::from_secs(1) => {
                (size * 2).min(MOST_RESERVED_KEYS)
            }
            _ => RESERVED_KEYS,
        };
        let mut keys = self.next_keys(table, key, block)?;
        self.blocks.borrow_mut().insert(table.to_owned(), (block, now));
        keys.sort_unstable_by(|a, b| b.cmp(a));
        let next = keys.pop();
        self.reserved.borrow_mut().insert(table.to_owned(), keys);
        Ok(next)
    }

    fn lift_deadline_when(&self, lifted: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.lifted.replace(Some(lifted));
    }

    /// `SET LOCAL statement_timeout` for what is left, in the job's read transaction (which
    /// ends it); `None` just forgets the deadline.
    fn set_deadline(&self, deadline: Option<std::time::Instant>) -> Result<(), StoreError> {
        match deadline {
            None => {
                self.deadline.set(None);
                self.lifted.replace(None);
                Ok(())
            }
            Some(deadline) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(store_sql::over_budget());
                }
                self.set_statement_timeout(deadline, left)
            }
        }
    }

    /// Binary `COPY`, with the keys drawn from the table's sequence first.
    fn bulk_insert(
        &self,
        table: &str,
        key: &str,
        columns: &[&str],
        rows: &[Param],
    ) -> Result<Option<Vec<i64>>, StoreError> {
        let width = columns.len();
        if width == 0 || !rows.len().is_multiple_of(width) {
            return Ok(None);
        }
        let count = rows.len() / width;
        let types = self.types_of(table, key, columns)?;
        let keys = self.next_keys(table, key, count as i64)?;
        let copy = format!("COPY {table} ({key}, {}) FROM STDIN BINARY", columns.join(", "));
        let key_params: Vec<Param> = keys.iter().map(|k| Param::Integer(*k)).collect();
        self.pipelined(async {
            let sink = self.client.copy_in(copy.as_str()).await?;
            let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
            let mut writer = std::pin::pin!(writer);
            let mut cells: Vec<Bound<'_>> = Vec::with_capacity(width + 1);
            for (row, key_param) in rows.chunks(width).zip(&key_params) {
                cells.clear();
                cells.push(Bound(key_param));
                cells.extend(row.iter().map(Bound));
                let refs: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
                writer.as_mut().write(&refs).await?;
            }
            writer.finish().await
        })?;
        Ok(Some(keys))
    }
}

/// What is left of a connection's task: how it ended.
fn drive(ended: Result<(), tokio_postgres::Error>) {
    if let Err(e) = ended {
        tracing::debug!(error = %e, "a PostgreSQL connection ended");
    }
}

/// A `FETCH` asked for, or its answer when it came at once.
enum Fetching<'a> {
    Asked(std::pin::Pin<Box<dyn Future<Output = Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>> + 'a>>),
    Answered(Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>),
}

impl PgConnection {
    /// Reads the rows of `sql` through a cursor, `FETCH_ROWS` at a time; with `ahead`, each
    /// `FETCH` is sent before the rows of the one before it go to `each` (which must then run
    /// no statement of its own on this connection: its answer would queue behind the rows).
    fn through_cursor(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
        ahead: bool,
    ) -> Result<(), StoreError> {
        let n = self.cursors.get();
        self.cursors.set(n.wrapping_add(1));
        let cursor = format!("tb_large_{n}");
        store_sql::Connection::execute(self, &format!("DECLARE {cursor} NO SCROLL CURSOR FOR {sql}"), params)?;
        let fetch = format!("FETCH {FETCH_ROWS} FROM {cursor}");
        let statement = self.prepared(&fetch, &[])?;
        let ask = || -> Result<Fetching<'_>, StoreError> {
            self.within_deadline()?;
            let mut asked: std::pin::Pin<Box<dyn Future<Output = _>>> = Box::pin(async {
                self.client.query_raw(&statement, std::iter::empty::<Bound<'_>>()).await?.try_collect().await
            });
            // Polled once, the request is queued; the connection's task sends it while this
            // waits a turn.
            let first = self.runtime.block_on(async {
                let first = std::future::poll_fn(|cx| std::task::Poll::Ready(asked.as_mut().poll(cx))).await;
                tokio::task::yield_now().await;
                first
            });
            Ok(match first {
                std::task::Poll::Ready(answer) => Fetching::Answered(answer),
                std::task::Poll::Pending => Fetching::Asked(asked),
            })
        };
        let answer = |fetching: Fetching<'_>| -> Result<Vec<tokio_postgres::Row>, StoreError> {
            match fetching {
                Fetching::Asked(asked) => self.runtime.block_on(asked),
                Fetching::Answered(answer) => answer,
            }
            .map_err(db_error)
        };
        let result = (|| {
            let mut next = Some(ask()?);
            while let Some(fetching) = next.take() {
                let rows = answer(fetching)?;
                let last = rows.len() < FETCH_ROWS;
                if !last && ahead {
                    next = Some(ask()?);
                }
                for row in &rows {
                    if !each(&Row(row))? {
                        // What was asked ahead is read and dropped: its answer comes first.
                        if let Some(fetching) = next.take() {
                            answer(fetching)?;
                        }
                        return Ok(());
                    }
                }
                if !last && !ahead {
                    next = Some(ask()?);
                }
            }
            Ok(())
        })();
        // A failed statement has aborted the transaction, cursor and all.
        if result.is_ok() {
            store_sql::Connection::batch(self, &format!("CLOSE {cursor}"))?;
        }
        result
    }
}

impl PgConnection {
    /// `count` new keys from the sequence of `table`'s column `key`. The sequence is named in
    /// the statement, so that its name is looked up once, not per key.
    fn next_keys(&self, table: &str, key: &str, count: i64) -> Result<Vec<i64>, StoreError> {
        let known = self.next_keys.borrow().get(table).cloned();
        let statement = match known {
            Some(statement) => statement,
            None => {
                let params = [Param::Text(table.to_owned()), Param::Text(key.to_owned())];
                let sequence = store_sql::query_one(self, SEQUENCE_OF, &params, |row| row.required_text(0))?
                    .ok_or_else(|| StoreError::Database(format!("no sequence for {table}.{key}").into()))?;
                let statement = format!("SELECT nextval({sequence}::regclass) FROM generate_series(1, $1)");
                self.next_keys.borrow_mut().insert(table.to_owned(), statement.clone());
                statement
            }
        };
        store_sql::query_all(self, &statement, &[Param::Integer(count)], |row| row.required_integer(0))
    }

    /// The types of `key` and `columns` of `table`, in that order (read once per table).
    fn types_of(&self, table: &str, key: &str, columns: &[&str]) -> Result<Vec<Type>, StoreError> {
        if !self.column_types.borrow().contains_key(table) {
            let found = store_sql::query_all(
                self,
                "SELECT CAST(attname AS text), CAST(atttypid AS bigint) FROM pg_attribute \
                 WHERE attrelid = CAST($1 AS regclass) AND attnum > 0 AND NOT attisdropped",
                &[Param::Text(table.to_owned())],
                |row| Ok((row.required_text(0)?, row.required_integer(1)?)),
            )?;
            let types = found
                .into_iter()
                .filter_map(|(name, oid)| Some((name, Type::from_oid(u32::try_from(oid).ok()?)?)))
                .collect();
            self.column_types.borrow_mut().insert(table.to_owned(), types);
        }
        let known = self.column_types.borrow();
        let of_table = known.get(table).ok_or_else(|| StoreError::Database(format!("no table {table}").into()))?;
        std::iter::once(key)
            .chain(columns.iter().copied())
            .map(|c| {
                of_table.get(c).cloned().ok_or_else(|| StoreError::Database(format!("no column {table}.{c}").into()))
            })
            .collect()
    }
}
