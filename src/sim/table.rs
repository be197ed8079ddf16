//! `meta.k8s.io/v1` Table rendering with the real apiserver's columns.
