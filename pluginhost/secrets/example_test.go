package secrets_test

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/nexus-platform/nexus/pluginhost/secrets"
)

func Example() {
	dir, cleanup := exampleDir()
	defer cleanup()
	key, err := secrets.LoadOrCreateKey(filepath.Join(dir, "secret.key"))
	if err != nil {
		fmt.Println(err)
		return
	}
	box, err := secrets.New(key)
	if err != nil {
		fmt.Println(err)
		return
	}
	stored, err := box.SealFields(map[string]any{"api_key": "new_secret_key", "batch_size": 200.0}, []string{"api_key"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(strings.HasPrefix(stored["api_key"].(string), secrets.Prefix), stored["batch_size"])
	plain, err := box.OpenFields(stored, []string{"api_key"})
	fmt.Println(plain["api_key"], err)
	// Output:
	// true 200
	// new_secret_key <nil>
}
