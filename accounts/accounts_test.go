package accounts

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestUIDSetJSON(t *testing.T) {
	s := uidSet{1, 2, 3, 7, 9, 10}
	b, err := json.Marshal(s)
	if err != nil || string(b) != "[[1,3],[7,7],[9,10]]" {
		t.Fatalf("marshal: %s %v", b, err)
	}
	var back uidSet
	if err := json.Unmarshal(b, &back); err != nil || !slices.Equal(back, s) {
		t.Fatalf("unmarshal: %v %v", back, err)
	}
	for _, bad := range []string{"[[3,1]]", "[[1,3],[2,4]]", "[[0,1000000]]", `"x"`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
