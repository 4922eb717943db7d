//! The flags that keep a headless Chromium off the network and out of the user's profile (with a fresh
//! `--user-data-dir` per start). Shared with the report's browser test, which includes this file.

/// Headless, no sandbox (root in containers), no GPU, and none of the background requests a closed network refuses.
pub const HEADLESS_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];
