// Command auth-plugin is the example authentication plugin of the reference document: it
// issues and verifies HS256 JSON Web Tokens signed with its secret jwt_secret.
//
// Messages: `login` {user_id} answers {token, expires_at}; `verify` {token} answers
// {valid, user_id, expires_at} or {valid: false, reason}.
//
// HTTP endpoints, served by Nexus on its own listener: POST /api/v1/auth/login {user_id}
// answers {token, expires_at}; POST /api/v1/auth/refresh {token} answers a new token for the
// same user and revokes the old one; POST /api/v1/auth/logout {token} revokes it. Revoked
// tokens are kept in this instance's memory until they expire (an example: a deployment
// with several instances would keep them in the plugin's key-value store).
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nexus-platform/nexus/clients/go/plugin"
)

func main() {
	revoked := &denylist{tokens: map[string]time.Time{}}
	err := plugin.Run(context.Background(), plugin.Plugin{
		HTTP:         httpHandler(revoked),
		Version:      "1.2.0",
		Services:     []string{"authentication"},
		MessageTypes: []string{"login", "verify"},
		OnMessage: func(ctx context.Context, m plugin.Message) (map[string]any, error) {
			cfg := plugin.SessionFromContext(ctx).Config()
			secret, _ := cfg["jwt_secret"].(string)
			ttl := time.Duration(3600) * time.Second
			if v, ok := cfg["session_timeout"].(float64); ok {
				ttl = time.Duration(v) * time.Second
			}
			switch m.Type {
			case "login":
				user, _ := m.Data["user_id"].(string)
				if user == "" {
					return nil, errors.New("login needs user_id")
				}
				exp := time.Now().Add(ttl).UTC()
				return map[string]any{"token": sign(secret, user, exp), "expires_at": exp.Format(time.RFC3339)}, nil
			case "verify":
				token, _ := m.Data["token"].(string)
				user, exp, err := revoked.verify(secret, token, time.Now())
				if err != nil {
					return map[string]any{"valid": false, "reason": err.Error()}, nil
				}
				return map[string]any{"valid": true, "user_id": user, "expires_at": exp.Format(time.RFC3339)}, nil
			}
			return nil, errors.New("unknown message type " + m.Type)
		},
		OnHealthCheck: func(ctx context.Context) []plugin.Check {
			secret, _ := plugin.SessionFromContext(ctx).Config()["jwt_secret"].(string)
			if len(secret) < 32 {
				return []plugin.Check{plugin.Warn("jwt_secret", "the signing secret is shorter than 32 characters").
					WithValue(float64(len(secret)), 32, "characters")}
			}
			return []plugin.Check{plugin.Pass("jwt_secret")}
		},
		OnConfigChange: func(ctx context.Context, c plugin.ConfigChange) error {
			if s, _ := c.Config["jwt_secret"].(string); len(s) < 16 {
				return errors.New("jwt_secret must be at least 16 characters")
			}
			return nil
		},
	})
	if err != nil {
		os.Stderr.WriteString("auth-plugin: " + err.Error() + "\n")
		os.Exit(1)
	}
}

var b64 = base64.RawURLEncoding

func sign(secret, user string, exp time.Time) string {
	header := b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims, _ := json.Marshal(map[string]any{"sub": user, "exp": exp.Unix(), "iss": "auth-plugin"})
	unsigned := header + "." + b64.EncodeToString(claims)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(unsigned))
	return unsigned + "." + b64.EncodeToString(mac.Sum(nil))
}

func verify(secret, token string, now time.Time) (string, time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", time.Time{}, errors.New("malformed token")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := b64.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return "", time.Time{}, errors.New("bad signature")
	}
	raw, err := b64.DecodeString(parts[1])
	if err != nil {
		return "", time.Time{}, errors.New("malformed claims")
	}
	var claims struct {
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		return "", time.Time{}, errors.New("malformed claims")
	}
	exp := time.Unix(claims.Exp, 0).UTC()
	if now.After(exp) {
		return "", time.Time{}, errors.New("expired")
	}
	return claims.Sub, exp, nil
}

// denylist holds the tokens logged out or refreshed before they expire.
type denylist struct {
	mu     sync.Mutex
	tokens map[string]time.Time // token -> its expiry
}

func (d *denylist) revoke(token string, exp time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for t, e := range d.tokens {
		if now.After(e) {
			delete(d.tokens, t)
		}
	}
	d.tokens[token] = exp
}

// verify is verify that also refuses revoked tokens.
func (d *denylist) verify(secret, token string, now time.Time) (string, time.Time, error) {
	d.mu.Lock()
	_, gone := d.tokens[token]
	d.mu.Unlock()
	if gone {
		return "", time.Time{}, errors.New("revoked")
	}
	return verify(secret, token, now)
}

// httpHandler serves the plugin's endpoints (see the package documentation).
func httpHandler(revoked *denylist) http.Handler {
	settings := func(r *http.Request) (string, time.Duration) {
		cfg := plugin.SessionFromContext(r.Context()).Config()
		secret, _ := cfg["jwt_secret"].(string)
		ttl := time.Hour
		if v, ok := cfg["session_timeout"].(float64); ok {
			ttl = time.Duration(v) * time.Second
		}
		return secret, ttl
	}
	reply := func(w http.ResponseWriter, status int, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
	read := func(w http.ResponseWriter, r *http.Request, field string) (string, bool) {
		var in map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&in); err != nil {
			reply(w, http.StatusBadRequest, map[string]any{"error": "the body must be a JSON object"})
			return "", false
		}
		v, _ := in[field].(string)
		if v == "" {
			reply(w, http.StatusBadRequest, map[string]any{"error": field + " is required"})
			return "", false
		}
		return v, true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/auth/login", func(w http.ResponseWriter, r *http.Request) {
		user, ok := read(w, r, "user_id")
		if !ok {
			return
		}
		secret, ttl := settings(r)
		exp := time.Now().Add(ttl).UTC()
		reply(w, http.StatusOK, map[string]any{"token": sign(secret, user, exp), "expires_at": exp.Format(time.RFC3339)})
	})
	mux.HandleFunc("POST /api/v1/auth/refresh", func(w http.ResponseWriter, r *http.Request) {
		token, ok := read(w, r, "token")
		if !ok {
			return
		}
		secret, ttl := settings(r)
		user, oldExp, err := revoked.verify(secret, token, time.Now())
		if err != nil {
			reply(w, http.StatusUnauthorized, map[string]any{"error": "invalid token: " + err.Error()})
			return
		}
		revoked.revoke(token, oldExp)
		exp := time.Now().Add(ttl).UTC()
		reply(w, http.StatusOK, map[string]any{"token": sign(secret, user, exp), "expires_at": exp.Format(time.RFC3339)})
	})
	mux.HandleFunc("POST /api/v1/auth/logout", func(w http.ResponseWriter, r *http.Request) {
		token, ok := read(w, r, "token")
		if !ok {
			return
		}
		secret, _ := settings(r)
		_, exp, err := revoked.verify(secret, token, time.Now())
		if err != nil {
			reply(w, http.StatusUnauthorized, map[string]any{"error": "invalid token: " + err.Error()})
			return
		}
		revoked.revoke(token, exp)
		reply(w, http.StatusOK, map[string]any{"logged_out": true})
	})
	return mux
}
