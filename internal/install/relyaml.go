package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/relhq/rel/internal/health"
)

// specFileName is the optional file at a bundle's root that says how to
// install, run and check the release.
const specFileName = "rel.yaml"

// maxSpecBytes bounds rel.yaml: it is read into memory.
const maxSpecBytes = 1 << 20

const defaultStopTimeout = 10 * time.Second

// Hook names, in the order an upgrade runs them.
const (
	hookBeforeInstall = "before_install"
	hookAfterInstall  = "after_install"
	hookStop          = "stop"
	hookStart         = "start"
	hookValidate      = "validate"
)

var hookNames = []string{hookBeforeInstall, hookAfterInstall, hookStop, hookStart, hookValidate}

// hook is one rel.yaml hook: a shell command and its timeout (0 = the
// host's default).
type hook struct {
	Command string
	Timeout time.Duration
}

// spec is a parsed rel.yaml. The zero spec (no rel.yaml) installs the files
// and does nothing else.
type spec struct {
	Hooks       map[string]hook
	Run         string
	Health      *health.Check // Dir and Env are filled in when it runs
	Env         map[string]string
	StopTimeout time.Duration
	// User is who hooks, run and an exec health check run as: one of the
	// users the agent allows (Config.RunAs, Config.AllowedUsers); "" is the
	// agent's default (RunAs).
	User string
}

// specError is an invalid rel.yaml: the reason names the field.
type specError struct{ path, msg string }

func (e *specError) Error() string {
	if e.path == "" {
		return "rel.yaml: " + e.msg
	}
	return "rel.yaml: " + e.path + ": " + e.msg
}

func errAt(path, format string, args ...any) error {
	return &specError{path: path, msg: fmt.Sprintf(format, args...)}
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseSpec reads rel.yaml. It walks the YAML tree itself instead of
// decoding into structs: yaml's own errors say "field x not found in type
// install.rawHealth" or "cannot unmarshal !!map into string", and a person
// fixing a bundle needs the field's path ("health.interval") instead. Every
// field is known (unknown ones are refused, as with KnownFields(true)).
func parseSpec(data []byte) (*spec, error) {
	s := &spec{StopTimeout: defaultStopTimeout}
	if len(data) > maxSpecBytes {
		return nil, errAt("", "larger than %d bytes", maxSpecBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		return nil, errAt("", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errAt("", "holds more than one YAML document")
	}
	top := deref(&doc)
	if top.Kind == yaml.DocumentNode && len(top.Content) > 0 {
		top = deref(top.Content[0])
	}
	if isNull(top) {
		return s, nil
	}
	err := eachField(top, "", func(key string, v *yaml.Node) error {
		var err error
		switch key {
		case "hooks":
			s.Hooks, err = parseHooks(v)
		case "run":
			s.Run, err = command(v, "run")
		case "health":
			s.Health, err = parseHealth(v)
		case "env":
			s.Env, err = parseEnv(v)
		case "stop_timeout":
			s.StopTimeout, err = duration(v, "stop_timeout", true)
		case "user":
			if s.User, err = scalar(v, "user"); err == nil && !userNameRE.MatchString(s.User) {
				err = errAt("user", "%q is not a user name (letters, digits, _ . -, at most 32)", s.User)
			}
		default:
			err = errAt(key, "unknown field (known: hooks, run, health, env, stop_timeout, user)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func parseHooks(n *yaml.Node) (map[string]hook, error) {
	hooks := map[string]hook{}
	err := eachField(n, "hooks", func(name string, v *yaml.Node) error {
		path := "hooks." + name
		if !slices.Contains(hookNames, name) {
			return errAt(path, "unknown hook (known: %s)", strings.Join(hookNames, ", "))
		}
		var h hook
		if v.Kind == yaml.MappingNode {
			err := eachField(v, path, func(key string, fv *yaml.Node) error {
				var err error
				switch key {
				case "command":
					h.Command, err = command(fv, path+".command")
				case "timeout":
					h.Timeout, err = duration(fv, path+".timeout", true)
				default:
					err = errAt(path+"."+key, "unknown field (known: command, timeout)")
				}
				return err
			})
			if err != nil {
				return err
			}
			if h.Command == "" {
				return errAt(path+".command", "missing")
			}
		} else {
			c, err := command(v, path)
			if err != nil {
				return err
			}
			h.Command = c
		}
		hooks[name] = h
		return nil
	})
	return hooks, err
}

func parseHealth(n *yaml.Node) (*health.Check, error) {
	c := &health.Check{}
	var kinds []string
	err := eachField(n, "health", func(key string, v *yaml.Node) error {
		path := "health." + key
		var err error
		switch key {
		case "http":
			kinds = append(kinds, key)
			if c.HTTP, err = scalar(v, path); err == nil {
				u, perr := url.Parse(c.HTTP)
				if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					err = errAt(path, "%q is not an http:// or https:// URL", c.HTTP)
				}
			}
		case "tcp":
			kinds = append(kinds, key)
			if c.TCP, err = scalar(v, path); err == nil {
				if _, port, perr := net.SplitHostPort(c.TCP); perr != nil || port == "" {
					err = errAt(path, "%q is not host:port", c.TCP)
				}
			}
		case "exec":
			kinds = append(kinds, key)
			c.Exec, err = command(v, path)
		case "interval":
			c.Interval, err = duration(v, path, true)
		case "timeout":
			c.Timeout, err = duration(v, path, true)
		case "healthy_after":
			c.HealthyAfter, err = duration(v, path, false)
		case "deadline":
			c.Deadline, err = duration(v, path, true)
		default:
			err = errAt(path, "unknown field (known: http, tcp, exec, interval, timeout, healthy_after, deadline)")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	switch len(kinds) {
	case 0:
		return nil, errAt("health", "needs one of http, tcp and exec")
	case 1:
	default:
		return nil, errAt("health", "has %s: give exactly one of http, tcp and exec", strings.Join(kinds, " and "))
	}
	return c, nil
}

func parseEnv(n *yaml.Node) (map[string]string, error) {
	env := map[string]string{}
	err := eachField(n, "env", func(key string, v *yaml.Node) error {
		path := "env." + key
		switch {
		case !envKeyRE.MatchString(key):
			return errAt(path, "not a variable name (letters, digits and _, not starting with a digit)")
		case strings.HasPrefix(key, "REL_"):
			return errAt(path, "names starting with REL_ are set by the agent")
		}
		if isNull(v) {
			env[key] = ""
			return nil
		}
		s, err := scalar(v, path)
		if err != nil {
			return err
		}
		env[key] = s
		return nil
	})
	return env, err
}

// eachField calls f for every key of a mapping, in order, refusing
// duplicate keys (yaml.v3 leaves that check to the decoding of structs and
// maps, which this walk does not use).
func eachField(n *yaml.Node, path string, f func(key string, v *yaml.Node) error) error {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		if path == "" {
			return errAt("", "must be a mapping of fields, got %s", kindName(n))
		}
		return errAt(path, "must be a mapping, got %s", kindName(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		if k.Kind != yaml.ScalarNode {
			return errAt(path, "keys must be strings")
		}
		full := k.Value
		if path != "" {
			full = path + "." + k.Value
		}
		if seen[k.Value] {
			return errAt(full, "given twice")
		}
		seen[k.Value] = true
		if err := f(k.Value, deref(n.Content[i+1])); err != nil {
			return err
		}
	}
	return nil
}

func scalar(n *yaml.Node, path string) (string, error) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return "", errAt(path, "must be a string, got %s", kindName(n))
	}
	return n.Value, nil
}

func command(n *yaml.Node, path string) (string, error) {
	s, err := scalar(n, path)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(s) == "" {
		return "", errAt(path, "empty command")
	}
	return s, nil
}

func duration(n *yaml.Node, path string, positive bool) (time.Duration, error) {
	s, err := scalar(n, path)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errAt(path, "invalid duration %q (write e.g. 500ms, 10s, 2m)", s)
	}
	switch {
	case positive && d <= 0:
		return 0, errAt(path, "must be positive, got %s", s)
	case d < 0:
		return 0, errAt(path, "must not be negative, got %s", s)
	}
	return d, nil
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}
