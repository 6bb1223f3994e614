//! Built-in collectors.
