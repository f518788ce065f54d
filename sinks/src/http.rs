//! HTTP sink. Being written — see `HttpOptions`.
