package manifest_test

import (
	"errors"
	"fmt"

	"github.com/nexus-platform/nexus/pluginhost/errs"
	"github.com/nexus-platform/nexus/pluginhost/manifest"
)

func ExampleParse() {
	_, err := manifest.Parse([]byte(`{
	  "id": "analytics-plugin",
	  "name": "Analytics Plugin",
	  "version": "1.2",
	  "entry_point": "bin/analytics",
	  "permissions": ["database:read", "events:emit", "HTTP:external"],
	  "dependencies": {"plugins": {"auth-plugin": "newest"}},
	  "configuration": {"batch_size": {"type": "integer", "default": 5, "min": 10}}
	}`))
	var e *errs.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, e.Message)
		for _, f := range e.Fields {
			fmt.Println(f)
		}
	}
	// Output:
	// VALIDATION_ERROR plugin manifest is invalid
	// version: must be a semantic version such as 1.2.0 (MAJOR.MINOR.PATCH, no leading v)
	// dependencies.plugins.auth-plugin: must be a semver constraint such as ">=1.2.0" or "*"
	// permissions[2]: must be a permission "resource:action" in lowercase, either part may be "*" (e.g. "database:read", "auth:*")
	// configuration.batch_size.default: must be at least 10
}
