//go:build !linux

package bench

import "errors"

// loadWorker needs epoll: on other systems the load generator is absent.
type loadWorker struct{}

func newLoadWorker(WorkerSpec) (*loadWorker, error) {
	return nil, errors.New("bench: the load generator needs Linux (epoll)")
}

func (*loadWorker) run(<-chan string, func(*WorkerReport)) error { return nil }
