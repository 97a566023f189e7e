package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// fileConfig is ~/.config/tender/config.yaml.
type fileConfig struct {
	Server string `json:"server,omitempty"`
	Token  string `json:"token,omitempty"`
	CAFile string `json:"caFile,omitempty"`
}

// defaultConfigPath is $XDG_CONFIG_HOME/tender/config.yaml, else
// ~/.config/tender/config.yaml ("" when neither is known).
func defaultConfigPath(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "tender", "config.yaml")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "tender", "config.yaml")
	}
	return ""
}

// loadConfig reads the config file; a missing file is an empty config,
// unless it was named explicitly.
func loadConfig(path string, explicit bool) (fileConfig, error) {
	var fc fileConfig
	if path == "" {
		return fc, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return fc, nil
	}
	if err != nil {
		return fc, invalid(fmt.Errorf("config: %w", err))
	}
	if err := yaml.UnmarshalStrict(b, &fc); err != nil {
		return fc, invalid(fmt.Errorf("config %s: %v", path, err))
	}
	if fc.CAFile != "" && !filepath.IsAbs(fc.CAFile) {
		fc.CAFile = filepath.Join(filepath.Dir(path), fc.CAFile)
	}
	return fc, nil
}
