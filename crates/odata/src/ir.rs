//! The bound query IR: what a request asks for, with every name resolved against the model and
//! every expression type-checked. The `sql` crate compiles it; nothing after binding can fail
//! because of user input.

use model::{EntityType, Geometry, Id, Instant, Interval, Navigation, Property};

/// A resource path below the service root, e.g. `/Things(1)/Datastreams(2)/Observations`.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourcePath {
    /// At least one segment; the first names an entity set.
    pub segments: Vec<Segment>,
    pub tail: Tail,
}

/// One entity-addressing step of a resource path.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// The entity type this step addresses.
    pub entity: EntityType,
    /// The navigation property taken from the previous segment; `None` for the first segment.
    pub via: Option<&'static Navigation>,
    /// The id in parentheses, e.g. `Things(1)`.
    pub key: Option<Id>,
}

/// What follows the last entity-addressing segment.
#[derive(Clone, Debug, PartialEq)]
pub enum Tail {
    /// Nothing: the path addresses an entity or a collection.
    None,
    /// `/name`: one property of an entity, as JSON `{"name": ...}`.
    Property(&'static Property),
    /// `/name/$value`: the raw value of one property.
    Value(&'static Property),
    /// `/$ref`: references (`@iot.selfLink`) instead of entities.
    Ref,
}

/// The query options of a request, bound to the entity type they apply to.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Query {
    pub filter: Option<Expr>,
    /// `None` when `$select` is absent (all properties and navigation links).
    pub select: Option<Vec<SelectItem>>,
    pub expand: Vec<Expand>,
    pub order_by: Vec<OrderBy>,
    pub top: Option<u64>,
    pub skip: u64,
    /// `Some(true)` for `$count=true`.
    pub count: Option<bool>,
    pub result_format: ResultFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResultFormat {
    #[default]
    Default,
    /// `$resultFormat=dataArray` (the Data Array extension).
    DataArray,
}

/// An item of `$select`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SelectItem {
    /// `id` (written `@iot.id` in responses).
    Id,
    Property(&'static Property),
    /// A navigation property: its `@iot.navigationLink` is kept.
    Navigation(&'static Navigation),
}

/// An item of `$expand`; `Datastreams/Observations` binds to an `Expand` of `Datastreams` whose
/// query expands `Observations`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expand {
    pub navigation: &'static Navigation,
    /// The options in parentheses, bound to `navigation.target`.
    pub query: Query,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderBy {
    pub expr: Expr,
    pub descending: bool,
}

/// Which entities a read may see, whatever its query says: the access rule's part of a query.
/// The SQL compiler applies it to every entity a statement touches (the entities read, those
/// reached through paths in `$filter` and the resource path, and every `$expand` level), so a
/// hidden entity is never returned, counted, matched or revealed through a navigation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Visibility {
    /// Everything: the server's own work and principals allowed to see all projects.
    #[default]
    All,
    /// Only entities of these projects (by project id); empty means nothing.
    Projects(Vec<i64>),
}

/// The static type of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Boolean,
    /// Integers and floating-point numbers alike.
    Number,
    String,
    /// An instant.
    DateTime,
    /// A time interval, or a property that may hold an instant or an interval.
    Interval,
    Duration,
    Geometry,
    /// A JSON value whose type is only known per row (`result`, `properties/x`, `metadata`);
    /// it takes the type of whatever it is compared with or passed to.
    Json,
    Null,
}

/// A bound expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Literal),
    /// A member of the entity being filtered, or of an entity reached through navigation.
    Member(MemberPath),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Call {
        function: Function,
        args: Vec<Expr>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Null,
    Boolean(bool),
    Integer(i64),
    Number(f64),
    String(String),
    DateTime(Instant),
    Interval(Interval),
    /// An ISO 8601 duration in microseconds (`duration'P1D'`); calendar units are not allowed.
    Duration(i64),
    Geometry(Geometry),
}

/// A path from the current entity to a member: zero or more navigation hops, then the member.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberPath {
    /// Navigation properties taken in order, e.g. `Datastream`, `Thing` for `Datastream/Thing/name`.
    /// To-many hops (`Things?$filter=Datastreams/name eq 'x'`) mean "any of them".
    pub hops: Vec<&'static Navigation>,
    pub member: Member,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Member {
    /// `id`.
    Id,
    Property(&'static Property),
    /// A path into a JSON-valued property, e.g. `properties/owner/name` or `result/0`
    /// (array indexes are given as their decimal text).
    Json {
        property: &'static Property,
        path: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    And,
    Or,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// The built-in functions of SensorThings v1.1 §9.3.3.5.2 (plus OData's `contains`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    // String functions.
    SubstringOf,
    Contains,
    EndsWith,
    StartsWith,
    Length,
    IndexOf,
    Substring,
    ToLower,
    ToUpper,
    Trim,
    Concat,
    // Date and time functions.
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    FractionalSeconds,
    Date,
    Time,
    TotalOffsetMinutes,
    Now,
    MinDateTime,
    MaxDateTime,
    // Math functions.
    Round,
    Floor,
    Ceiling,
    // Geospatial functions.
    GeoDistance,
    GeoLength,
    GeoIntersects,
    StEquals,
    StDisjoint,
    StTouches,
    StWithin,
    StOverlaps,
    StCrosses,
    StIntersects,
    StContains,
    StRelate,
}
