//! Cursor pseudo-encodings: placeholder.
