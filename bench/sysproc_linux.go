package bench

import "syscall"

// childAttr makes a child die with us: Pdeathsig covers a crash of the
// parent; workers also exit on EOF on stdin.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
