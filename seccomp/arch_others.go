//go:build linux && !amd64 && !arm64

package seccomp

// auditArch 0: ward-init refuses to start a namespaced instance on an
// architecture whose filter nobody checked.
const auditArch = 0
