//! General-purpose data structures, with no knowledge of Berth's domain.

pub mod treap;
