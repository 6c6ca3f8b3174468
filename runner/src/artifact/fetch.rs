//! Streamed, resumable download of code locations (remote mode).
