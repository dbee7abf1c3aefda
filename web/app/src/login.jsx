import { useState } from 'preact/hooks';
import { login } from './api.js';
import { Field, Problem } from './ui.jsx';

/** E-mail and password → `POST /v1/auth/login`. */
export function Login({ onSignedIn }) {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await login(email.trim(), password);
      setPassword('');
      await onSignedIn();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }

  return (
    <main id="main" class="login">
      <h1>Sign in to Berth</h1>
      <form onSubmit={submit} aria-describedby={error ? 'login-error' : undefined}>
        <Field label="E-mail" id="email" type="email" autocomplete="username" required value={email} onValue={setEmail} />
        <Field
          label="Password"
          id="password"
          type="password"
          autocomplete="current-password"
          required
          value={password}
          onValue={setPassword}
        />
        <Problem error={error} id="login-error" />
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
      <p class="muted">
        No account yet? <code>berth register</code> creates one (<a href="/docs">API docs</a>).
      </p>
    </main>
  );
}
