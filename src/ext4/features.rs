//! The ext4 feature flags: one table of every feature this engine knows,
//! what the reader and the writer do with it, and the typed set a
//! superblock's three feature words make.
//!
//! Both gates consult this table only: [`Superblock::parse`] refuses
//! [`FeatureSet::unreadable`], the writer's checks refuse
//! [`FeatureSet::unwritable`], and the error they return
//! ([`Ext4Error::Features`]) carries the refused set, rendered by the names
//! here. Supporting a feature is changing its row and writing the code the
//! row promises.
//!
//! [`Superblock::parse`]: super::superblock::Superblock::parse
//! [`Ext4Error::Features`]: super::error::Ext4Error::Features

use std::fmt;

/// The superblock word a feature bit lives in, which says what an
/// implementation that does not know the bit may do (as the kernel reads
/// them): ignore it (compat), only read (ro_compat), or nothing (incompat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `s_feature_compat`.
    Compat,
    /// `s_feature_incompat`.
    Incompat,
    /// `s_feature_ro_compat`.
    RoCompat,
}

/// What one side of the engine does with a filesystem that has a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Handled: the gate lets it through.
    Yes,
    /// Refused by the gate, which names it.
    No,
    /// A flag of state rather than of format (a journal to replay, orphans
    /// to clean up): the gate lets it through and a check of that state
    /// refuses it with a message of its own (see `write/checks.rs`).
    State,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// As e2fsprogs spells it (`dumpe2fs`, `mke2fs -O`).
    pub name: &'static str,
    pub class: Class,
    pub bit: u32,
    /// Whether [`Ext4::open`](super::Ext4::open) reads such a filesystem.
    pub read: Support,
    /// Whether the writer edits such a filesystem.
    pub write: Support,
}

/// The table: a `Feature` per row, `Feature::ALL` in row order (class,
/// then bit, as `dumpe2fs` lists them) and `Feature::row`.
macro_rules! table {
    ($($feature:ident: $class:ident $bit:literal $name:literal $read:ident $write:ident,)*) => {
        /// A feature this engine knows by name (see the table in `features.rs`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Feature {
            $($feature,)*
        }

        impl Feature {
            /// Every row, in table order.
            pub(crate) const ALL: &'static [Feature] = &[$(Feature::$feature,)*];

            pub const fn row(self) -> Row {
                match self {
                    $(Feature::$feature => Row {
                        name: $name,
                        class: Class::$class,
                        bit: $bit,
                        read: Support::$read,
                        write: Support::$write,
                    },)*
                }
            }
        }
    };
}

table! {
    // feature        class     bit      name                  read  write
    DirPrealloc:      Compat    0x1      "dir_prealloc"        Yes   No,
    ImagicInodes:     Compat    0x2      "imagic_inodes"       Yes   No,
    HasJournal:       Compat    0x4      "has_journal"         Yes   Yes,
    ExtAttr:          Compat    0x8      "ext_attr"            Yes   Yes,
    ResizeInode:      Compat    0x10     "resize_inode"        Yes   Yes,
    DirIndex:         Compat    0x20     "dir_index"           Yes   Yes,
    LazyBg:           Compat    0x40     "lazy_bg"             Yes   No,
    SnapshotBitmap:   Compat    0x100    "snapshot_bitmap"     Yes   No,
    SparseSuper2:     Compat    0x200    "sparse_super2"       Yes   No,
    FastCommit:       Compat    0x400    "fast_commit"         Yes   No,
    StableInodes:     Compat    0x800    "stable_inodes"       Yes   Yes,
    OrphanFile:       Compat    0x1000   "orphan_file"         Yes   Yes,

    Compression:      Incompat  0x1      "compression"         No    No,
    Filetype:         Incompat  0x2      "filetype"            Yes   Yes,
    NeedsRecovery:    Incompat  0x4      "needs_recovery"      Yes   State,
    JournalDev:       Incompat  0x8      "journal_dev"         No    No,
    MetaBg:           Incompat  0x10     "meta_bg"             No    No,
    Extent:           Incompat  0x40     "extent"              Yes   Yes,
    Bit64:            Incompat  0x80     "64bit"               Yes   Yes,
    Mmp:              Incompat  0x100    "mmp"                 Yes   No,
    FlexBg:           Incompat  0x200    "flex_bg"             Yes   Yes,
    EaInode:          Incompat  0x400    "ea_inode"            Yes   No,
    Dirdata:          Incompat  0x1000   "dirdata"             No    No,
    MetadataCsumSeed: Incompat  0x2000   "metadata_csum_seed"  Yes   Yes,
    LargeDir:         Incompat  0x4000   "large_dir"           Yes   No,
    InlineData:       Incompat  0x8000   "inline_data"         No    No,
    Encrypt:          Incompat  0x10000  "encrypt"             No    No,
    Casefold:         Incompat  0x20000  "casefold"            No    No,

    SparseSuper:      RoCompat  0x1      "sparse_super"        Yes   Yes,
    LargeFile:        RoCompat  0x2      "large_file"          Yes   Yes,
    BtreeDir:         RoCompat  0x4      "btree_dir"           Yes   No,
    HugeFile:         RoCompat  0x8      "huge_file"           Yes   Yes,
    UninitBg:         RoCompat  0x10     "uninit_bg"           Yes   No,
    DirNlink:         RoCompat  0x20     "dir_nlink"           Yes   Yes,
    ExtraIsize:       RoCompat  0x40     "extra_isize"         Yes   Yes,
    HasSnapshot:      RoCompat  0x80     "has_snapshot"        Yes   No,
    Quota:            RoCompat  0x100    "quota"               Yes   No,
    Bigalloc:         RoCompat  0x200    "bigalloc"            No    No,
    MetadataCsum:     RoCompat  0x400    "metadata_csum"       Yes   Yes,
    Replica:          RoCompat  0x800    "replica"             Yes   No,
    ReadOnly:         RoCompat  0x1000   "read-only"           Yes   No,
    Project:          RoCompat  0x2000   "project"             Yes   No,
    SharedBlocks:     RoCompat  0x4000   "shared_blocks"       Yes   No,
    Verity:           RoCompat  0x8000   "verity"              Yes   No,
    OrphanPresent:    RoCompat  0x10000  "orphan_present"      Yes   State,
}

impl Feature {
    pub const fn name(self) -> &'static str {
        self.row().name
    }
}

/// The features a superblock sets: its three feature words, bits the
/// table does not know included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureSet {
    compat: u32,
    incompat: u32,
    ro_compat: u32,
}

impl FeatureSet {
    pub const fn new(compat: u32, incompat: u32, ro_compat: u32) -> Self {
        FeatureSet {
            compat,
            incompat,
            ro_compat,
        }
    }

    /// The set of the given features.
    pub fn of(features: &[Feature]) -> Self {
        FeatureSet::of_rows(features.iter().map(|f| f.row()))
    }

    /// The word of one class.
    pub const fn word(self, class: Class) -> u32 {
        match class {
            Class::Compat => self.compat,
            Class::Incompat => self.incompat,
            Class::RoCompat => self.ro_compat,
        }
    }

    fn word_mut(&mut self, class: Class) -> &mut u32 {
        match class {
            Class::Compat => &mut self.compat,
            Class::Incompat => &mut self.incompat,
            Class::RoCompat => &mut self.ro_compat,
        }
    }

    pub const fn contains(self, f: Feature) -> bool {
        let row = f.row();
        self.word(row.class) & row.bit != 0
    }

    pub const fn is_empty(self) -> bool {
        self.compat == 0 && self.incompat == 0 && self.ro_compat == 0
    }

    /// The features of this set whose row `keep` accepts.
    fn known_where(self, keep: impl Fn(&Row) -> bool) -> FeatureSet {
        let rows = Feature::ALL.iter().map(|f| f.row());
        FeatureSet::of_rows(rows.filter(|r| self.word(r.class) & r.bit != 0 && keep(r)))
    }

    fn of_rows(rows: impl Iterator<Item = Row>) -> FeatureSet {
        let mut s = FeatureSet::default();
        for row in rows {
            *s.word_mut(row.class) |= row.bit;
        }
        s
    }

    /// The bits of this set that no row names.
    pub(crate) fn unknown(self) -> FeatureSet {
        let known = FeatureSet::of(Feature::ALL);
        FeatureSet {
            compat: self.compat & !known.compat,
            incompat: self.incompat & !known.incompat,
            ro_compat: self.ro_compat & !known.ro_compat,
        }
    }

    /// What keeps the reader from opening the filesystem: the rows it
    /// cannot read, and incompat bits it does not know (unknown compat and
    /// ro_compat bits leave the format readable, by their classes' rule).
    pub(crate) fn unreadable(self) -> FeatureSet {
        let mut s = self.known_where(|r| r.read == Support::No);
        s.incompat |= self.unknown().incompat;
        s
    }

    /// What keeps the writer from editing the filesystem: the rows it
    /// cannot write, and every bit it does not know (whatever the class: a
    /// writer must know all the metadata it changes). Flags of state are
    /// left to their own checks.
    pub fn unwritable(self) -> FeatureSet {
        self.known_where(|r| r.write == Support::No)
            .union(self.unknown())
    }

    pub const fn union(self, other: FeatureSet) -> FeatureSet {
        FeatureSet {
            compat: self.compat | other.compat,
            incompat: self.incompat | other.incompat,
            ro_compat: self.ro_compat | other.ro_compat,
        }
    }

    /// Only the features of one class.
    pub fn only(self, class: Class) -> FeatureSet {
        let mut s = FeatureSet::default();
        *s.word_mut(class) = self.word(class);
        s
    }

    /// The names of the features set, compat then incompat then ro_compat,
    /// each in table order and bits no row names last, as `FEATURE_0x..`.
    pub fn names(self) -> Vec<String> {
        let mut out = Vec::new();
        for class in [Class::Compat, Class::Incompat, Class::RoCompat] {
            let word = self.word(class);
            let mut rest = word;
            for row in Feature::ALL.iter().map(|f| f.row()) {
                if row.class == class && word & row.bit != 0 {
                    out.push(row.name.to_string());
                    rest &= !row.bit;
                }
            }
            for i in 0..32 {
                let bit = 1u32 << i;
                if rest & bit != 0 {
                    out.push(format!("FEATURE_{bit:#x}"));
                }
            }
        }
        out
    }
}

/// The names, comma-separated.
impl fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// Which gate refused a set of features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Opening the filesystem ([`FeatureSet::unreadable`]).
    Read,
    /// Opening it for writing ([`FeatureSet::unwritable`]).
    Write,
}

impl Gate {
    /// What was refused, naming `features`.
    pub fn what(self, features: &FeatureSet) -> String {
        match self {
            Gate::Read if features.only(Class::Incompat) == *features => {
                format!("incompatible feature(s) {features}")
            }
            Gate::Read => format!("feature(s) {features}"),
            Gate::Write => format!("cannot write: feature(s) {features} not supported"),
        }
    }

    /// What the user can do about it.
    pub(crate) fn hint(self) -> &'static str {
        match self {
            Gate::Read => "rpiimg reads Raspberry Pi OS and Ubuntu root filesystems; use an image made with standard mkfs.ext4 features",
            Gate::Write => "rpiimg writes ext4 as Raspberry Pi OS and Ubuntu make it (mkfs.ext4 defaults); use such an image",
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_distinct_and_in_dumpe2fs_order() {
        let rank = |c: Class| match c {
            Class::Compat => 0,
            Class::Incompat => 1,
            Class::RoCompat => 2,
        };
        for w in Feature::ALL.windows(2) {
            let (a, b) = (w[0].row(), w[1].row());
            assert!(
                (rank(a.class), a.bit) < (rank(b.class), b.bit),
                "{} before {}",
                a.name,
                b.name
            );
        }
        for f in Feature::ALL {
            let r = f.row();
            assert!(r.bit.is_power_of_two(), "{}", r.name);
            assert_ne!(
                r.read,
                Support::State,
                "{}: the reader has no state checks",
                r.name
            );
        }
    }

    #[test]
    fn names_known_then_unknown_per_class() {
        let s = FeatureSet::new(0x4 | 0x80, 0x2 | 0x40_0000, 0x400);
        assert_eq!(
            s.names(),
            [
                "has_journal",
                "FEATURE_0x80",
                "filetype",
                "FEATURE_0x400000",
                "metadata_csum"
            ]
        );
        assert_eq!(s.unknown(), FeatureSet::new(0x80, 0x40_0000, 0));
    }

    #[test]
    fn gates() {
        // mkfs.ext4's defaults, as Raspberry Pi OS has them.
        let pi = FeatureSet::of(&[
            Feature::HasJournal,
            Feature::ExtAttr,
            Feature::ResizeInode,
            Feature::DirIndex,
            Feature::Filetype,
            Feature::Extent,
            Feature::FlexBg,
            Feature::SparseSuper,
            Feature::LargeFile,
            Feature::HugeFile,
            Feature::DirNlink,
            Feature::ExtraIsize,
            Feature::MetadataCsum,
        ]);
        assert!(pi.unreadable().is_empty());
        assert!(pi.unwritable().is_empty());
        // State flags pass both gates: their own checks refuse them.
        let dirty = pi.union(FeatureSet::of(&[
            Feature::NeedsRecovery,
            Feature::OrphanPresent,
        ]));
        assert!(dirty.unwritable().is_empty());
        // Unknown compat and ro_compat bits are readable, not writable.
        let odd = pi.union(FeatureSet::new(0x8000_0000, 0, 0x8000_0000));
        assert!(odd.unreadable().is_empty());
        assert_eq!(
            odd.unwritable(),
            FeatureSet::new(0x8000_0000, 0, 0x8000_0000)
        );
        let bad = pi.union(FeatureSet::of(&[Feature::InlineData, Feature::Quota]));
        assert_eq!(bad.unreadable(), FeatureSet::of(&[Feature::InlineData]));
        assert_eq!(
            bad.unwritable(),
            FeatureSet::of(&[Feature::InlineData, Feature::Quota])
        );
        assert_eq!(
            Gate::Read.what(&bad.unreadable()),
            "incompatible feature(s) inline_data"
        );
        assert_eq!(
            Gate::Write.what(&bad.unwritable()),
            "cannot write: feature(s) inline_data, quota not supported"
        );
    }
}
