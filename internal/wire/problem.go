package wire

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ProblemTypeBase prefixes a reason to form a problem's "type" URI.
const ProblemTypeBase = "https://tollgate.dev/problems/"

// ContentTypeProblem is the media type of a Problem.
const ContentTypeProblem = "application/problem+json"

// Problem is an RFC 9457 problem details document with Tollgate's extension
// members. Reason is machine-readable (snake_case) and names the type:
// ProblemTypeBase + Reason.
type Problem struct {
	Type     string            `json:"type"`
	Title    string            `json:"title"`
	Status   int               `json:"status"`
	Detail   string            `json:"detail,omitempty"`
	Reason   string            `json:"reason,omitempty"`
	Consumer string            `json:"consumer,omitempty"`
	Plan     string            `json:"plan,omitempty"`
	Limit    string            `json:"limit,omitempty"`
	Balance  *int64            `json:"balance,omitempty"`
	Payment  map[string]string `json:"payment,omitempty"`
}

// NewProblem returns a problem of the given status and reason: its type is
// ProblemTypeBase+reason ("about:blank" without a reason), its title the
// status text.
func NewProblem(status int, reason, detail string) Problem {
	p := Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Reason: reason}
	if reason != "" {
		p.Type = ProblemTypeBase + reason
	}
	if p.Title == "" {
		p.Title = "Request denied"
	}
	return p
}

// JSON encodes the problem.
func (p *Problem) JSON() []byte {
	b, err := json.Marshal(p)
	if err != nil { // unreachable: strings, ints and a string map
		return []byte(`{"type":"about:blank","status":` + strconv.Itoa(p.Status) + `}`)
	}
	return b
}

// Message is what a person should read of a problem: its detail, or its
// title when it has none.
func (p *Problem) Message() string {
	if p.Detail != "" {
		return p.Detail
	}
	return p.Title
}
