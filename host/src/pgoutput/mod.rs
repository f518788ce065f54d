//! pgoutput decoding (in progress).
