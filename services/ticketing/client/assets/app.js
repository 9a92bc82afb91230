// GitTix: the ticketing app's web client.
//
// Static, dependency-free and CSP-friendly: no inline code, no inline styles, and no
// string is ever parsed as markup. User content (titles, emails, error messages) only ever reaches the page
// as text (textContent / text nodes), so markup in it shows as text.
//
// Pages are routed on the client with the History API; the server answers the same shell
// for every page path, so deep links and reloads work. Every request goes to the same
// origin (the gateway or the Ingress routes /api/... to the services) with the session
// cookie, which is httponly: this script never reads or stores it.
'use strict';

(function () {
  const NETWORK_ERROR = 'Could not reach the server';
  const STRIPE_JS_URL = 'https://js.stripe.com/v3/';
  const TEST_TOKENS = [
    { value: 'tok_visa', label: 'tok_visa (Visa, succeeds)' },
    { value: 'tok_chargeDeclined', label: 'tok_chargeDeclined (card declined)' },
  ];

  const state = {
    // undefined: not known yet; null: signed out; an object: the signed-in user.
    currentUser: undefined,
    userSeq: 0,
    renderSeq: 0,
    cleanups: [],
    config: null,
    stripe: null,
  };
  const els = {};

  // ---------------------------------------------------------------- helpers

  // Builds an element. `props`: className, text, on<event> handlers, boolean or string
  // attributes (set with setAttribute, never as markup). `children`: nodes or strings
  // (strings become text nodes).
  function h(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'className') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key.startsWith('on') && typeof value === 'function') {
        node.addEventListener(key.slice(2).toLowerCase(), value);
      } else if (key === 'value') node.value = String(value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children || []) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  function text(value) {
    return value === undefined || value === null ? '' : String(value);
  }

  function formatPrice(price) {
    return text(price);
  }

  // Extension-less paths outside /api/ are pages (the server answers them with the shell).
  function isPagePath(pathname) {
    if (pathname === '/api' || pathname.startsWith('/api/')) return false;
    const last = pathname.slice(pathname.lastIndexOf('/') + 1);
    return !last.includes('.');
  }

  // ------------------------------------------------------------------- API

  // Turns an error body into [{message, field?}].
  function errorsFrom(data, status) {
    if (data && Array.isArray(data.errors) && data.errors.length > 0) {
      return data.errors.map((e) => ({
        message: text(e && e.message !== undefined ? e.message : 'Request failed'),
        field: e && typeof e.field === 'string' ? e.field : undefined,
      }));
    }
    return [{ message: 'Request failed (' + status + ')' }];
  }

  // A same-origin request with the session cookie: {ok, status, data, errors}.
  async function api(method, path, body) {
    const init = {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { accept: 'application/json' },
    };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    let raw = '';
    try {
      response = await fetch(path, init);
      raw = await response.text();
    } catch (_) {
      return { ok: false, status: 0, data: null, errors: [{ message: NETWORK_ERROR }] };
    }
    let data = null;
    if (raw) {
      try {
        data = JSON.parse(raw);
      } catch (_) {
        data = null;
      }
    }
    if (response.ok) return { ok: true, status: response.status, data, errors: [] };
    return { ok: false, status: response.status, data, errors: errorsFrom(data, response.status) };
  }

  // /config.json: {stripePublishableKey}. Cached once it loaded; never rejects (a failure
  // means no key, and the next call tries again).
  function loadConfig() {
    if (!state.config) {
      state.config = fetch('/config.json', { credentials: 'same-origin', cache: 'no-store' })
        .then((response) => {
          if (!response.ok) throw new Error('HTTP ' + response.status);
          return response.json();
        })
        .then((config) => {
          const key = config && config.stripePublishableKey;
          return { stripePublishableKey: typeof key === 'string' && key ? key : null };
        })
        .catch(() => {
          state.config = null;
          return { stripePublishableKey: null };
        });
    }
    return state.config;
  }

  // ------------------------------------------------------------- errors UI

  // <div class="alert alert-danger"><h4>Ooops....</h4><ul><li>message</li>...</ul></div>
  function errorAlert(errors) {
    return h('div', { className: 'alert alert-danger', role: 'alert' }, [
      h('h4', { className: 'alert-heading' }, ['Ooops....']),
      h('ul', { className: 'alert-list' }, errors.map((e) => h('li', {}, [text(e.message)]))),
    ]);
  }

  function showErrors(form, box, errors) {
    box.replaceChildren(errorAlert(errors));
    const fields = new Set(errors.map((e) => e.field).filter(Boolean));
    if (!form) return;
    for (const input of form.querySelectorAll('input[name], select[name]')) {
      if (fields.has(input.name)) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    }
  }

  function clearErrors(form, box) {
    box.replaceChildren();
    if (!form) return;
    for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  }

  function errorsBox(id) {
    return h('div', { className: 'errors', id, 'aria-live': 'polite' });
  }

  // Runs `action` on submit: one at a time, the button disabled meanwhile, errors cleared
  // first. `action` returns a list of errors to show, or nothing on success.
  function onSubmit(view, form, box, action) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (form.getAttribute('aria-busy') === 'true') return;
      const buttons = form.querySelectorAll('button');
      form.setAttribute('aria-busy', 'true');
      for (const b of buttons) b.disabled = true;
      clearErrors(form, box);
      try {
        const errors = await action();
        if (errors && errors.length && view.alive()) showErrors(form, box, errors);
      } catch (err) {
        if (view.alive()) showErrors(form, box, [{ message: text(err && err.message) || 'Something went wrong' }]);
      } finally {
        form.removeAttribute('aria-busy');
        for (const b of buttons) b.disabled = false;
      }
    });
  }

  function field(id, label, props) {
    return h('div', { className: 'form-group' }, [
      h('label', { for: id }, [label]),
      h('input', Object.assign({ id, name: id, className: 'form-control' }, props)),
    ]);
  }

  // ------------------------------------------------------------------ header

  function renderHeader() {
    const user = state.currentUser;
    document.body.dataset.auth = user === undefined ? 'pending' : user ? 'signed-in' : 'signed-out';
    if (user === undefined) {
      els.nav.replaceChildren();
      return;
    }
    const links = user
      ? [
          ['Sell Tickets', '/tickets/new', 'nav-sell'],
          ['My Orders', '/orders', 'nav-orders'],
          ['Sign Out', '/auth/signout', 'nav-signout'],
        ]
      : [
          ['Sign Up', '/auth/signup', 'nav-signup'],
          ['Sign In', '/auth/signin', 'nav-signin'],
        ];
    const items = [];
    if (user) {
      items.push(h('li', { className: 'nav-user', id: 'nav-user', title: 'Signed in' }, [text(user.email)]));
    }
    for (const [label, href, id] of links) {
      items.push(h('li', { className: 'nav-item' }, [h('a', { className: 'nav-link', href, id }, [label])]));
    }
    els.nav.replaceChildren(...items);
    markActiveLink();
  }

  function markActiveLink() {
    for (const a of document.querySelectorAll('.site-header a[href]')) {
      if (a.getAttribute('href') === location.pathname) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
  }

  // GET /api/users/currentuser → {"currentUser": {...} | null}; a failure counts as signed out.
  async function refreshUser() {
    const seq = ++state.userSeq;
    const res = await api('GET', '/api/users/currentuser');
    if (seq !== state.userSeq) return;
    const user = res.ok && res.data ? res.data.currentUser : null;
    state.currentUser = user && typeof user === 'object' ? user : null;
    renderHeader();
  }

  // ------------------------------------------------------------------ router

  const ROUTES = [
    { pattern: /^\/$/, page: 'landing', render: renderLanding },
    { pattern: /^\/auth\/signup\/?$/, page: 'signup', render: (v) => renderAuth(v, 'signup') },
    { pattern: /^\/auth\/signin\/?$/, page: 'signin', render: (v) => renderAuth(v, 'signin') },
    { pattern: /^\/auth\/signout\/?$/, page: 'signout', render: renderSignout },
    { pattern: /^\/tickets\/new\/?$/, page: 'new-ticket', render: renderNewTicket },
    { pattern: /^\/tickets\/([^/]+)\/?$/, page: 'ticket', render: renderTicket },
    { pattern: /^\/orders\/?$/, page: 'orders', render: renderOrders },
    { pattern: /^\/orders\/([^/]+)\/?$/, page: 'order', render: renderOrder },
  ];

  function decode(segment) {
    try {
      return decodeURIComponent(segment);
    } catch (_) {
      return segment;
    }
  }

  function makeView(seq) {
    return {
      alive() {
        return seq === state.renderSeq;
      },
      onCleanup(fn) {
        if (seq === state.renderSeq) state.cleanups.push(fn);
        else fn();
      },
      loading() {
        if (!this.alive()) return;
        els.app.replaceChildren(h('p', { className: 'loading', id: 'loading' }, ['Loading…']));
        els.app.dataset.state = 'loading';
      },
      // Shows `nodes` as the page (unless another page was rendered meanwhile).
      mount(title, nodes, pageState) {
        if (!this.alive()) return false;
        document.title = title ? title + ' · GitTix' : 'GitTix';
        // A page leaves out what it has nothing for (null): replaceChildren would print
        // it as the text "null".
        els.app.replaceChildren(...nodes.filter((node) => node !== null && node !== undefined && node !== false));
        els.app.dataset.state = pageState || 'ready';
        return true;
      },
    };
  }

  function render(options) {
    for (const cleanup of state.cleanups.splice(0)) {
      try {
        cleanup();
      } catch (_) {
        // a cleanup failing must not stop the next page
      }
    }
    const seq = ++state.renderSeq;
    const view = makeView(seq);
    const path = location.pathname;
    let route = null;
    let params = [];
    for (const candidate of ROUTES) {
      const match = candidate.pattern.exec(path);
      if (match) {
        route = candidate;
        params = match.slice(1).map(decode);
        break;
      }
    }
    if (!route) route = { page: 'not-found', render: renderNotFound };
    els.app.dataset.page = route.page;
    view.loading();
    markActiveLink();
    if (options && options.focus) {
      window.scrollTo(0, 0);
      els.app.focus({ preventScroll: true });
    }
    // The header follows the session on every page, as the original's did.
    if (route.page !== 'signout') refreshUser();
    Promise.resolve()
      .then(() => route.render(view, ...params))
      .catch((err) => {
        view.mount('Error', [
          h('h1', {}, ['Something went wrong']),
          errorAlert([{ message: text(err && err.message) || 'Something went wrong' }]),
        ], 'error');
      });
  }

  function navigate(path, options) {
    const url = new URL(path, location.href);
    const target = url.pathname + url.search + url.hash;
    if (options && options.replace) history.replaceState(null, '', target);
    else if (url.href !== location.href) history.pushState(null, '', target);
    render({ focus: true });
  }

  function onLinkClick(event) {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const start = event.target instanceof Element ? event.target : null;
    const a = start && start.closest('a[href]');
    if (!a) return;
    if ((a.target && a.target !== '_self') || a.hasAttribute('download')) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !isPagePath(url.pathname)) return;
    // In-page anchors (the skip link) keep their default behaviour.
    if (url.hash && url.pathname === location.pathname && url.search === location.search) return;
    event.preventDefault();
    navigate(url.pathname + url.search + url.hash);
  }

  // ------------------------------------------------------------------- pages

  // `/`: the tickets for sale.
  async function renderLanding(view) {
    const res = await api('GET', '/api/tickets');
    const heading = h('h1', {}, ['Tickets']);
    if (!res.ok) return view.mount('', [heading, errorAlert(res.errors)], 'error');
    const tickets = Array.isArray(res.data) ? res.data : [];
    const rows = tickets
      .filter((t) => t && typeof t === 'object')
      .map((ticket) =>
        h('tr', { 'data-ticket-id': text(ticket.id) }, [
          h('td', { className: 'ticket-title' }, [text(ticket.title)]),
          h('td', { className: 'ticket-price' }, [formatPrice(ticket.price)]),
          h('td', {}, [
            h('a', { className: 'link', href: '/tickets/' + encodeURIComponent(text(ticket.id)) }, ['View']),
          ]),
        ]),
      );
    const table = h('table', { className: 'table', id: 'tickets-table' }, [
      h('thead', {}, [
        h('tr', {}, [h('th', { scope: 'col' }, ['Title']), h('th', { scope: 'col' }, ['Price']), h('th', { scope: 'col' }, ['Link'])]),
      ]),
      h('tbody', { id: 'tickets-body' }, rows),
    ]);
    const empty = rows.length
      ? null
      : h('p', { className: 'empty-state', id: 'tickets-empty' }, ['No tickets for sale right now.']);
    return view.mount('', [heading, h('div', { className: 'card table-card' }, [table]), empty]);
  }

  // `/auth/signup` and `/auth/signin`.
  function renderAuth(view, kind) {
    const label = kind === 'signup' ? 'Sign Up' : 'Sign In';
    const box = errorsBox(kind + '-errors');
    const form = h('form', { className: 'card form', id: kind + '-form', novalidate: true }, [
      h('h1', {}, [label]),
      field('email', 'Email Address', { type: 'email', autocomplete: 'email', spellcheck: 'false' }),
      field('password', 'Password', {
        type: 'password',
        autocomplete: kind === 'signup' ? 'new-password' : 'current-password',
      }),
      box,
      h('button', { type: 'submit', className: 'btn btn-primary', id: kind + '-submit' }, [label]),
    ]);
    onSubmit(view, form, box, async () => {
      const res = await api('POST', '/api/users/' + kind, {
        email: form.elements.email.value,
        password: form.elements.password.value,
      });
      if (!res.ok) return res.errors;
      await refreshUser();
      if (view.alive()) navigate('/');
      return null;
    });
    view.mount(label, [form]);
  }

  // `/auth/signout`: signs out, then goes to `/`.
  async function renderSignout(view) {
    view.mount('Sign Out', [h('p', { className: 'muted', id: 'signout-status' }, ['Signing you out…'])], 'loading');
    const res = await api('POST', '/api/users/signout', {});
    await refreshUser();
    if (!view.alive()) return;
    if (!res.ok) {
      view.mount('Sign Out', [h('h1', {}, ['Sign Out']), errorAlert(res.errors)], 'error');
      return;
    }
    navigate('/', { replace: true });
  }

  // `/tickets/new`: sell a ticket.
  function renderNewTicket(view) {
    const box = errorsBox('ticket-errors');
    const form = h('form', { className: 'card form', id: 'new-ticket-form', novalidate: true }, [
      h('h1', {}, ['Create a Ticket']),
      field('title', 'Title', { type: 'text', autocomplete: 'off', maxlength: '200' }),
      field('price', 'Price', { type: 'text', inputmode: 'decimal', autocomplete: 'off' }),
      box,
      h('button', { type: 'submit', className: 'btn btn-primary', id: 'new-ticket-submit' }, ['Submit']),
    ]);
    const price = form.elements.price;
    // As the original: the price is rounded to two decimals when the field loses focus.
    price.addEventListener('blur', () => {
      const value = parseFloat(price.value);
      if (Number.isNaN(value)) return;
      price.value = value.toFixed(2);
    });
    onSubmit(view, form, box, async () => {
      const res = await api('POST', '/api/tickets', {
        title: form.elements.title.value,
        price: price.value,
      });
      if (!res.ok) return res.errors;
      if (view.alive()) navigate('/');
      return null;
    });
    view.mount('Create a Ticket', [form]);
  }

  // `/tickets/:id`: a ticket, and "Purchase".
  async function renderTicket(view, id) {
    const res = await api('GET', '/api/tickets/' + encodeURIComponent(id));
    if (!res.ok || !res.data || typeof res.data !== 'object') {
      const errors = res.ok ? [{ message: 'Unexpected answer' }] : res.errors;
      return view.mount('Ticket', [h('h1', {}, ['Ticket']), errorAlert(errors)], 'error');
    }
    const ticket = res.data;
    const box = errorsBox('purchase-errors');
    const form = h('form', { className: 'purchase-form', id: 'purchase-form' }, [
      box,
      h('button', { type: 'submit', className: 'btn btn-primary', id: 'purchase' }, ['Purchase']),
    ]);
    onSubmit(view, form, box, async () => {
      const created = await api('POST', '/api/orders', { ticketId: text(ticket.id) });
      if (!created.ok) return created.errors;
      const order = created.data || {};
      if (view.alive()) navigate('/orders/' + encodeURIComponent(text(order.id)));
      return null;
    });
    return view.mount(text(ticket.title), [
      h('section', { className: 'card ticket', id: 'ticket', 'data-ticket-id': text(ticket.id) }, [
        h('h1', { id: 'ticket-title', className: 'ticket-heading' }, [text(ticket.title)]),
        h('h4', { id: 'ticket-price', className: 'ticket-price' }, ['Price: ' + formatPrice(ticket.price)]),
        form,
      ]),
    ]);
  }

  function secondsLeft(order) {
    const expires = Date.parse(text(order.expiresAt));
    if (Number.isNaN(expires)) return 0;
    return Math.max(0, Math.round((expires - Date.now()) / 1000));
  }

  // Loads Stripe.js once (allowed by the page's policy only when a key is configured).
  function loadStripe() {
    if (window.Stripe) return Promise.resolve(window.Stripe);
    if (state.stripe) return state.stripe;
    state.stripe = new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = STRIPE_JS_URL;
      script.async = true;
      script.addEventListener('load', () =>
        window.Stripe ? resolve(window.Stripe) : reject(new Error('Could not load Stripe')),
      );
      script.addEventListener('error', () => {
        script.remove();
        state.stripe = null;
        reject(new Error('Could not load Stripe'));
      });
      document.head.append(script);
    });
    return state.stripe;
  }

  // The pay form: test tokens without a Stripe key, Stripe's card form with one. `pay(token)`
  // returns errors or nothing.
  function payForm(view, key, pay) {
    const box = errorsBox('pay-errors');
    const button = h('button', { type: 'submit', className: 'btn btn-primary', id: 'pay-button' }, ['Pay']);
    if (!key) {
      const select = h(
        'select',
        { id: 'payment-token', name: 'token', className: 'form-control' },
        TEST_TOKENS.map((t) => h('option', { value: t.value, selected: t.value === 'tok_visa' }, [t.label])),
      );
      select.value = 'tok_visa';
      const form = h('form', { className: 'pay-form', id: 'pay-form', novalidate: true, 'data-provider': 'test' }, [
        h('div', { className: 'form-group' }, [h('label', { for: 'payment-token' }, ['Test card']), select]),
        h('p', { className: 'hint' }, ['Payments go to the local test provider: no real card is charged.']),
        box,
        button,
      ]);
      onSubmit(view, form, box, () => pay(select.value));
      return form;
    }
    const mountPoint = h('div', { id: 'card-element', className: 'card-element', 'aria-labelledby': 'card-label' });
    const form = h('form', { className: 'pay-form', id: 'pay-form', novalidate: true, 'data-provider': 'stripe' }, [
      h('div', { className: 'form-group' }, [h('span', { className: 'label', id: 'card-label' }, ['Card']), mountPoint]),
      box,
      button,
    ]);
    button.disabled = true;
    let stripe = null;
    let card = null;
    loadStripe()
      .then((Stripe) => {
        if (!view.alive() || !form.isConnected) return;
        stripe = Stripe(key);
        card = stripe.elements().create('card');
        card.mount(mountPoint);
        card.on('change', (event) => {
          if (event && event.error) showErrors(form, box, [{ message: text(event.error.message) }]);
          else clearErrors(form, box);
        });
        view.onCleanup(() => card.destroy());
        button.disabled = false;
      })
      .catch((err) => {
        if (view.alive()) showErrors(form, box, [{ message: text(err && err.message) }]);
      });
    onSubmit(view, form, box, async () => {
      if (!stripe || !card) return [{ message: 'The card form is not ready yet' }];
      const result = await stripe.createToken(card);
      if (result.error) return [{ message: text(result.error.message) }];
      return pay(result.token.id);
    });
    return form;
  }

  // `/orders/:id`: the countdown and the pay form.
  async function renderOrder(view, id) {
    const [res, config] = await Promise.all([api('GET', '/api/orders/' + encodeURIComponent(id)), loadConfig()]);
    if (!res.ok || !res.data || typeof res.data !== 'object') {
      const errors = res.ok ? [{ message: 'Unexpected answer' }] : res.errors;
      return view.mount('Order', [h('h1', {}, ['Order']), errorAlert(errors)], 'error');
    }
    const order = res.data;
    const ticket = order.ticket && typeof order.ticket === 'object' ? order.ticket : {};
    const status = text(order.status);
    const section = h('section', {
      className: 'card order',
      id: 'order',
      'data-order-id': text(order.id),
      'data-status': status,
    }, [
      h('h1', { id: 'order-title', className: 'order-heading' }, [text(ticket.title)]),
      h('p', { id: 'order-price', className: 'order-price' }, ['Price: ' + formatPrice(ticket.price)]),
    ]);

    const expired = () => h('p', { id: 'order-expired', className: 'status-banner status-banner--expired' }, ['Order Expired']);

    if (status === 'complete') {
      section.append(h('p', { id: 'order-paid', className: 'status-banner status-banner--paid' }, ['Paid']));
      return view.mount('Order', [section]);
    }
    if (status === 'cancelled' || secondsLeft(order) <= 0) {
      section.append(expired());
      return view.mount('Order', [section]);
    }

    const countdown = h('p', { id: 'order-countdown', className: 'countdown', role: 'timer' });
    const showLeft = (seconds) => {
      countdown.textContent = 'Time left to pay: ' + seconds + ' seconds';
    };
    const form = payForm(view, config.stripePublishableKey, async (token) => {
      const paid = await api('POST', '/api/payments', { token, orderId: text(order.id) });
      if (!paid.ok) return paid.errors;
      if (view.alive()) navigate('/orders');
      return null;
    });
    showLeft(secondsLeft(order));
    section.append(countdown, form);

    const timer = window.setInterval(() => {
      const left = secondsLeft(order);
      if (left > 0) {
        showLeft(left);
        return;
      }
      window.clearInterval(timer);
      section.dataset.expired = 'true';
      countdown.replaceWith(expired());
      form.remove();
    }, 1000);
    view.onCleanup(() => window.clearInterval(timer));
    return view.mount('Order', [section]);
  }

  // `/orders`: the user's orders, `<title> - <status>`.
  async function renderOrders(view) {
    const res = await api('GET', '/api/orders');
    const heading = h('h1', {}, ['My Orders']);
    if (!res.ok) return view.mount('My Orders', [heading, errorAlert(res.errors)], 'error');
    const orders = (Array.isArray(res.data) ? res.data : []).filter((o) => o && typeof o === 'object');
    if (!orders.length) {
      return view.mount('My Orders', [heading, h('p', { className: 'empty-state', id: 'orders-empty' }, ['You have no orders yet.'])]);
    }
    const items = orders.map((order) => {
      const title = order.ticket && typeof order.ticket === 'object' ? text(order.ticket.title) : '';
      const status = text(order.status);
      return h('li', { className: 'order-item', 'data-order-id': text(order.id), 'data-status': status }, [
        h('a', { className: 'order-link', href: '/orders/' + encodeURIComponent(text(order.id)) }, [title + ' - ' + status]),
      ]);
    });
    return view.mount('My Orders', [heading, h('ul', { className: 'card order-list', id: 'orders-list' }, items)]);
  }

  function renderNotFound(view) {
    view.mount('Page Not Found', [
      h('section', { className: 'card' }, [
        h('h1', {}, ['Page Not Found']),
        h('p', {}, ['There is no page at ' + location.pathname + '.']),
        h('a', { className: 'link', href: '/' }, ['See the tickets for sale']),
      ]),
    ], 'not-found');
  }

  // -------------------------------------------------------------------- init

  function init() {
    els.app = document.getElementById('app');
    els.nav = document.getElementById('nav-links');
    document.addEventListener('click', onLinkClick);
    window.addEventListener('popstate', () => render({ focus: false }));
    render({ focus: false });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
