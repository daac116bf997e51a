//! End-to-end tests against a real kube-apiserver + etcd + kube-controller-manager on loopback
//! (`scripts/control-plane.sh`), with the operator's processes started as subprocesses.
//! Each test works in a namespace of its own.
mod controller;
mod dispatcher;
mod ingest;
mod receiver;
mod receivers;
mod scaleout;
mod shutdown;
mod support;
