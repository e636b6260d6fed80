package configschema_test

import (
	"fmt"

	"github.com/nexus-platform/nexus/pluginhost/configschema"
)

func ExampleSchema_Apply() {
	schema, problems := configschema.Parse([]byte(`{
	  "batch_size": {"type": "integer", "default": 50, "min": 10, "max": 1000},
	  "api_key":    {"type": "string", "secret": true}
	}`))
	if problems != nil {
		fmt.Println(problems)
		return
	}
	current := map[string]any{"batch_size": 100.0, "api_key": "s3cret"}

	merged, updated, restart, problems := schema.Apply(current, map[string]any{"batch_size": 200.0, "api_key": configschema.Hidden})
	fmt.Println(schema.Mask(merged), updated, restart, problems)

	_, _, _, problems = schema.Apply(current, map[string]any{"batch_size": 5000.0, "batch_sise": 1.0})
	fmt.Println(problems)
	// Output:
	// map[api_key:***hidden*** batch_size:200] [batch_size] false []
	// [batch_sise: unknown field batch_size: must be at most 1000]
}
