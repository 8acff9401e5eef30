//! The image container: opening `.img` / `.img.xz` files as byte windows.

// Reads images and .xz indexes rpiimg did not make: no unchecked indexing
// or arithmetic here or below (damage gets an error, never a panic).
#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

pub(crate) mod cache;
pub(crate) mod cow;
pub mod source;
mod window;
pub mod xz_index;

pub use cache::Cache;
pub use cow::Cow;
pub(crate) use cow::FileRange;
pub(crate) use source::open_for;
pub use source::{open, ImageError, OpenedImage};
pub use window::{ReadAt, Window, WriteAt};
