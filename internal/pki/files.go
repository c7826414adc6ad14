package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrKeyPermissions is wrapped when a key file may be read by group or others.
var ErrKeyPermissions = errors.New("key file is readable by group or others")

// ReadKeyFile reads a private key, refusing a file that group or others can
// read: a key that other users of the host may have copied is not a secret.
func ReadKeyFile(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o: run 'chmod 600 %s'", ErrKeyPermissions, path, m, path)
	}
	data, err := readAll(f, fi)
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return key, nil
}

func readAll(f *os.File, fi fs.FileInfo) ([]byte, error) {
	if fi.Size() > 1<<20 {
		return nil, errors.New("larger than 1 MiB: not a PEM file")
	}
	buf := make([]byte, fi.Size())
	n, err := f.ReadAt(buf, 0)
	if err != nil && n != len(buf) {
		return nil, err
	}
	return buf[:n], nil
}

// ReadCertsFile reads every certificate of a PEM file.
func ReadCertsFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	certs, err := ParseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s: %w", path, err)
	}
	return certs, nil
}

// WriteFile writes data atomically (temp file, fsync, rename) with mode
// perm. With exclusive it refuses to replace an existing file, so that
// making a CA or a key twice never destroys the first.
func WriteFile(path string, data []byte, perm os.FileMode, exclusive bool) error {
	if exclusive {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s already exists: move it away or choose another --dir/--out", path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if exclusive {
		// Link fails if the name appeared meanwhile, unlike rename.
		if err := os.Link(name, path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		os.Remove(name)
	} else if err := os.Rename(name, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
