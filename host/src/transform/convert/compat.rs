//! WIT 0.2 ⇄ 0.1 records, for modules built against `cdc:pipeline@0.1.0`.
//!
//! The two versions differ only in the change record (0.2 adds op `read` and
//! `snapshot`); values, columns and the rest are the same shapes in two generated
//! modules, moved field by field. A read goes to a 0.1 module as an insert whose id
//! starts with `r`, and [`super::FromGuest`] makes an insert with a read id a read again.

use crate::transform::runtime::v01::cdc::pipeline::types as old;
use crate::transform::runtime::wit as new;

/// Converts a value-like variant between the two generated modules: every case with
/// its payload converted by `$conv`.
macro_rules! variant {
    ($v:expr, $from:ident => $to:ident, $conv:ident; units: $($u:ident),*; cases: $($c:ident),*) => {
        match $v {
            $( $from::$u => $to::$u, )*
            $( $from::$c(x) => $to::$c($conv(x)), )*
        }
    };
}

trait Same<T> {
    fn same(self) -> T;
}

macro_rules! identical {
    ($($t:ty),*) => { $( impl Same<$t> for $t { fn same(self) -> $t { self } } )* };
}
identical!(bool, u8, u32, i16, i32, i64, f32, f64, String);

macro_rules! records {
    ($($name:ident { $($f:ident),* }),* $(,)?) => {
        $(
            impl Same<new::$name> for old::$name {
                fn same(self) -> new::$name { new::$name { $($f: self.$f.same()),* } }
            }
            impl Same<old::$name> for new::$name {
                fn same(self) -> old::$name { old::$name { $($f: self.$f.same()),* } }
            }
        )*
    };
}
records!(
    TimeTz {
        micros,
        offset_secs
    },
    Interval {
        months,
        days,
        micros
    },
    OtherValue { type_oid, text },
    PgArray {
        element_oid,
        dims,
        elements
    },
    Column {
        name,
        type_oid,
        is_key,
        value
    },
    TruncateOptions {
        cascade,
        restart_identity
    },
    LogicalMessage {
        prefix,
        content,
        transactional
    },
);

impl<A: Same<B>, B> Same<Vec<B>> for Vec<A> {
    fn same(self) -> Vec<B> {
        self.into_iter().map(Same::same).collect()
    }
}

impl<A: Same<B>, B> Same<Option<B>> for Option<A> {
    fn same(self) -> Option<B> {
        self.map(Same::same)
    }
}

fn same<A: Same<B>, B>(a: A) -> B {
    a.same()
}

macro_rules! variants {
    ($($name:ident; units: $($u:ident),*; cases: $($c:ident),*);* $(;)?) => {
        $(
            impl Same<new::$name> for old::$name {
                fn same(self) -> new::$name {
                    use old::$name as F;
                    use new::$name as T;
                    variant!(self, F => T, same; units: $($u),*; cases: $($c),*)
                }
            }
            impl Same<old::$name> for new::$name {
                fn same(self) -> old::$name {
                    use new::$name as F;
                    use old::$name as T;
                    variant!(self, F => T, same; units: $($u),*; cases: $($c),*)
                }
            }
        )*
    };
}
variants!(
    Element; units: Null; cases: Boolean, Int2, Int4, Int8, Float4, Float8, Numeric, Text,
        Bytea, Json, Jsonb, Uuid, Date, Time, Timetz, Timestamp, Timestamptz, Interval,
        EnumLabel, Other;
    Value; units: Null, UnchangedToast; cases: Boolean, Int2, Int4, Int8, Float4, Float8,
        Numeric, Text, Bytea, Json, Jsonb, Uuid, Date, Time, Timetz, Timestamp, Timestamptz,
        Interval, Array, EnumLabel, Other;
);

/// A 0.2 change as a 0.1 module sees it.
pub fn down(c: new::Change) -> old::Change {
    old::Change {
        id: c.id,
        op: match c.op {
            new::Op::Insert | new::Op::Read => old::Op::Insert,
            new::Op::Update => old::Op::Update,
            new::Op::Delete => old::Op::Delete,
            new::Op::Truncate => old::Op::Truncate,
            new::Op::Message => old::Op::Message,
        },
        schema: c.schema,
        table: c.table,
        before: same(c.before),
        before_is_full: c.before_is_full,
        after: same(c.after),
        lsn: c.lsn,
        commit_lsn: c.commit_lsn,
        xid: c.xid,
        commit_ts: c.commit_ts,
        truncate: same(c.truncate),
        message: same(c.message),
        route: c.route,
        headers: c.headers,
    }
}

/// A 0.1 module's change as 0.2 (an insert with a read id becomes a read later, in
/// `FromGuest`, which has the id parsed).
pub fn up(c: old::Change) -> new::Change {
    new::Change {
        id: c.id,
        op: match c.op {
            old::Op::Insert => new::Op::Insert,
            old::Op::Update => new::Op::Update,
            old::Op::Delete => new::Op::Delete,
            old::Op::Truncate => new::Op::Truncate,
            old::Op::Message => new::Op::Message,
        },
        schema: c.schema,
        table: c.table,
        before: same(c.before),
        before_is_full: c.before_is_full,
        after: same(c.after),
        lsn: c.lsn,
        commit_lsn: c.commit_lsn,
        xid: c.xid,
        commit_ts: c.commit_ts,
        truncate: same(c.truncate),
        message: same(c.message),
        route: c.route,
        headers: c.headers,
        snapshot: None,
    }
}
