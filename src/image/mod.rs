//! The image container: opening `.img` / `.img.xz` files as byte windows.

pub(crate) mod cache;
pub(crate) mod cow;
pub mod source;
mod window;
pub mod xz_index;

pub use cache::Cache;
pub use cow::{Cow, FileRange};
pub use source::{open, ImageError, OpenedImage};
pub use window::{ReadAt, Window, WriteAt};
