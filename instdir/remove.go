package instdir

import (
	"errors"
	"fmt"
	"os"
)

// Remove removes an instance directory; an absent one is not an error.
func Remove(dir string) error {
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("instdir: remove %s: %w", dir, err)
	}
	return nil
}
