package journal

import "syscall"

const oDirect = syscall.O_DIRECT
