# The Kubernetes versions this project builds and tests on (sourced by the control-plane scripts).
# KUBE_CURRENT: every live test, the demo and the chart checks run on it.
# KUBE_OLDEST: the oldest supported release (k8s-openapi's `v1_33` feature, the chart's kubeVersion);
# CI installs the CRDs on it and runs a smoke test.
KUBE_CURRENT=1.37.2
KUBE_OLDEST=1.33.13
# An etcd both releases support.
ETCD_CURRENT=3.6.16
